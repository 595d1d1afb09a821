"""Priority lanes and deadlines on a shared quota: the figures of docs/operations.md.

``python -m bridge.bench.priority`` starts one simulated server (``--rpm 600``) and, for
each scenario, two processes that share its quota through Redis (``--store``):

- a **batch** process keeps the quota saturated (``bridge.imap`` over an endless input,
  ``--batch-concurrency`` at once, in the batch lane);
- once it does, an **interactive** process makes ``--calls`` calls, one every
  ``--spacing`` seconds, and reads each call's admission wait from the bridge's watcher
  hook (what ``bridge.otel`` reports as ``bridge.admission.wait``).

Scenario **lanes**: the second process runs in the interactive lane, with
``Limits(reserve_interactive=--reserve)``. Scenario **no lanes**: both run as batch, as
every process did before lanes. It reports the interactive calls' p95 admission wait in
each, their ratio (target: at most 0.2), and the batch process's throughput while the
interactive calls ran (target: at least ``(1 - reserve)`` x the limit).

Then, on an endpoint paused by a 429 (``retry-after`` about 10 s), it times
``--deadline-trials`` calls under ``bridge.deadline(1)``: each must raise
``DeadlineExceeded`` without sending (the server's counters say so), within 10 ms.

With ``--docs`` (the default) the table goes into docs/operations.md between its markers.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bridge
from bridge._integration import CallInfo, Watch, add_watcher, require
from bridge.testing import SimulatedServer, serve

__all__ = ["main"]

DOCS = Path(__file__).resolve().parents[2] / "docs"
BEGIN, END = "<!-- bench.priority:begin -->", "<!-- bench.priority:end -->"
KEY = "sk-priority-bench"


@dataclass(frozen=True)
class Scenario:
    name: str
    interactive_lane: str
    waits: list[float]  # each interactive call's admission wait, seconds
    batch_rate: float  # batch completions per second while the interactive calls ran
    limit_rate: float  # the limit, per second
    failed: int  # calls that failed, both processes
    rate_limited: int  # 429s the server sent

    @property
    def p95(self) -> float:
        return _p95(self.waits)


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if values else 0.0


# -- the two processes --------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    limits = bridge.Limits(
        rpm=args.rpm, tpm=None, store=args.store_url, on_store_error="fail",
        reserve_interactive=args.reserve,
    )  # fmt: skip
    return bridge.openai(base_url=args.base_url, api_key=KEY, limits=limits)


async def _ask(client: Any, text: str) -> None:
    await client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])


def _batch_role(args: argparse.Namespace) -> int:
    """Saturate the quota until stdin closes; print each completion's wall-clock time."""
    client, done_at, failed = _client(args), [], 0
    errors: collections.Counter[str] = collections.Counter()
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()

    async def one(i: int) -> bool:
        try:
            await _ask(client, f"batch {i}")
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            return False
        return True

    with bridge.priority("batch"):
        results = bridge.imap(
            one, itertools.count(), concurrency=args.batch_concurrency, ordered=False
        )
        for ok in results:
            if ok:
                done_at.append(time.time())
            else:
                failed += 1
            if stop.is_set():
                break
        results.close()
    print(json.dumps({"done_at": done_at, "failed": failed, "errors": errors}))
    return 0


class _Waits:
    """A watcher: each call's admission wait, summed over its attempts."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def start(self, call: CallInfo) -> Watch:
        return _Wait(self.waits)

    def paused(self, endpoint: str, seconds: float) -> None:
        pass


class _Wait:
    def __init__(self, into: list[float]) -> None:
        self._into, self._total = into, 0.0

    def admitted(self, seconds: float) -> None:
        self._total += seconds

    def answered(self, status: int, seconds: float) -> None:
        pass

    def retry(self, reason: str) -> None:
        pass

    def tokens(self, used_in: int, used_out: int) -> None:
        pass

    def end(self, error: BaseException | None) -> None:
        self._into.append(self._total)


def _interactive_role(args: argparse.Namespace) -> int:
    """``--calls`` calls, spaced; print their admission waits and when they ran."""
    client, watcher, failed = _client(args), _Waits(), 0
    add_watcher(watcher)
    started = time.time()
    with bridge.priority(args.lane):
        for i in range(args.calls):
            begun = time.monotonic()
            try:
                bridge.run(_ask(client, f"interactive {i}"))
            except Exception:  # noqa: BLE001 - counted and reported
                failed += 1
            time.sleep(max(0.0, args.spacing - (time.monotonic() - begun)))
    print(json.dumps({"waits": watcher.waits, "start": started, "end": time.time(),
                      "failed": failed}))  # fmt: skip
    return 0


# -- the driver ---------------------------------------------------------------------------


def _spawn(role: str, args: argparse.Namespace, store_url: str, *extra: str) -> Any:
    command = [
        sys.executable, "-m", "bridge.bench.priority", "--role", role,
        "--base-url", args.base_url, "--store-url", store_url, "--rpm", str(args.rpm),
        "--reserve", str(args.reserve), "--calls", str(args.calls),
        "--spacing", str(args.spacing), "--batch-concurrency", str(args.batch_concurrency),
        *extra,
    ]  # fmt: skip
    return subprocess.Popen(  # noqa: S603 - this module again, with our own arguments
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _scenario(args: argparse.Namespace, server: SimulatedServer, lane: str) -> Scenario:
    server.reset()
    prefix = f"bridge-bench-priority-{uuid.uuid4().hex}:"
    store_url = f"{args.store}?key_prefix={prefix}"
    batch = _spawn("batch", args, store_url)
    try:
        _await_saturation(server, args, batch)
        interactive = _spawn("interactive", args, store_url, "--lane", lane)
        out, err = interactive.communicate(timeout=args.calls * args.spacing + 120)
        if interactive.returncode != 0:
            raise RuntimeError(f"the interactive process failed:\n{err}")
        shown = json.loads(out)
        batch_out, batch_err = batch.communicate("", timeout=60)
        if batch.returncode != 0:
            raise RuntimeError(f"the batch process failed:\n{batch_err}")
    finally:
        if batch.poll() is None:
            batch.kill()
        _delete_prefix(args.store, prefix)
    ran = json.loads(batch_out)
    for error, count in ran["errors"].items():
        print(f"batch: {count} x {error}", file=sys.stderr)
    window = [t for t in ran["done_at"] if shown["start"] <= t <= shown["end"]]
    name = "lanes" if lane == "interactive" else "no lanes (both batch)"
    return Scenario(
        name=name,
        interactive_lane=lane,
        waits=shown["waits"],
        batch_rate=len(window) / (shown["end"] - shown["start"]),
        limit_rate=args.rpm / 60,
        failed=shown["failed"] + ran["failed"],
        rate_limited=server.stats()["status_counts"].get("429", 0),
    )


def _await_saturation(server: SimulatedServer, args: argparse.Namespace, batch: Any) -> None:
    """Until the batch process has sent for a few seconds at the limit (a hang guard: 60 s)."""
    wanted, give_up = args.rpm / 60 * args.warmup, time.monotonic() + 60
    while server.stats()["requests"] < wanted:
        if time.monotonic() > give_up or batch.poll() is not None:
            batch.kill()
            raise RuntimeError(
                f"the batch process never saturated the limit:\n{batch.communicate()[1]}"
            )
        time.sleep(0.1)


def _delete_prefix(store: str, prefix: str) -> None:
    import redis  # noqa: PLC0415 - the redis extra, required by main()

    client = redis.Redis.from_url(store)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _deadline_trials(trials: int) -> tuple[list[float], int]:
    """Times ``trials`` calls under deadline(1) on a paused endpoint; and requests they sent."""
    with serve(rpm=6, latency=0.05) as server:
        client = bridge.openai(
            base_url=server.base_url, api_key=f"sk-{uuid.uuid4().hex}",
            limits=bridge.Limits(rpm=None, tpm=None), retry=bridge.Retry(attempts=1),
        )  # fmt: skip
        bridge.run(_ask(client, "fills the server's minute"))
        with contextlib.suppress(Exception):  # the 429 (retry-after ~10 s) is the point
            bridge.run(_ask(client, "gets a 429 with retry-after"))
        before = server.stats()["requests"] + server.stats()["rate_limited"]
        times = []
        for i in range(trials):
            begun = time.perf_counter()
            try:
                with bridge.deadline(1):
                    bridge.run(_ask(client, f"under a deadline {i}"))
            except bridge.DeadlineExceeded:
                times.append(time.perf_counter() - begun)
        sent = server.stats()["requests"] + server.stats()["rate_limited"] - before
    return times, sent


def table(scenarios: list[Scenario], reserve: float, deadline: tuple[list[float], int],
          trials: int) -> str:  # fmt: skip
    lanes, plain = scenarios
    rows = [
        "| scenario | interactive p95 admission wait | median | batch throughput while "
        "interactive ran | calls failed | 429s |",
        "|---|---|---|---|---|---|",
    ]
    rows.extend(
        f"| {s.name} | {s.p95:.3f} s | {statistics.median(s.waits):.3f} s "
        f"| {s.batch_rate:.2f}/s ({s.batch_rate / s.limit_rate:.2f} x the limit) "
        f"| {s.failed} | {s.rate_limited} |"
        for s in scenarios
    )
    times, sent = deadline
    ratio = lanes.p95 / plain.p95 if plain.p95 else float("inf")
    floor = (1 - reserve) * lanes.limit_rate
    slowest = max(times) * 1000 if times else float("nan")
    return "\n".join(
        [
            *rows,
            "",
            "| target | measured | met |",
            "|---|---|---|",
            f"| interactive p95 wait with lanes <= 0.2 x without | {ratio:.3f} x | "
            f"{'yes' if ratio <= 0.2 else 'no'} |",
            f"| batch throughput while interactive ran >= (1 - {reserve}) x the limit "
            f"= {floor:.2f}/s | {lanes.batch_rate:.2f}/s | "
            f"{'yes' if lanes.batch_rate >= floor else 'no'} |",
            f"| `DeadlineExceeded` decided without sending, within 10 ms | "
            f"{len(times)}/{trials} raised, {sent} sent, slowest {slowest:.2f} ms, "
            f"median {statistics.median(times) * 1000:.2f} ms | "
            f"{'yes' if len(times) == trials and sent == 0 and slowest <= 10 else 'no'} |",
        ]
    )


def write_docs(text: str, command: str) -> None:
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    block = (
        f"{BEGIN}\nMeasured with `{command}` ({machine}, shared with other work):\n\n{text}\n{END}"
    )
    page = DOCS / "operations.md"
    before, found, rest = page.read_text().partition(BEGIN)
    if not found:
        raise RuntimeError(f"{page} has no {BEGIN} marker to write between")
    _, _, after = rest.partition(END)
    page.write_text(before + block + after)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.bench.priority", description=__doc__, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add = parser.add_argument
    add("--store", default="redis://127.0.0.1:6379/0", help="the Redis store (no query)")
    add("--rpm", type=int, default=600, help="the shared limit, requests a minute (600)")
    add("--reserve", type=float, default=0.3, help="reserve_interactive (0.3)")
    add("--calls", type=int, default=20, help="interactive calls (20)")
    add("--spacing", type=float, default=1.0, help="seconds between interactive calls (1)")
    add("--batch-concurrency", type=int, default=64, help="batch calls at once (64)")
    add("--latency", type=float, default=0.3, help="the server's reply latency, s (0.3)")
    add("--warmup", type=float, default=4.0, help="seconds of saturation first (4)")
    add("--deadline-trials", type=int, default=50, help="deadline calls to time (50)")
    add("--no-docs", dest="docs", action="store_false", help="print only; write no docs")
    # The two processes of a scenario run this module again with a role.
    add("--role", choices=("batch", "interactive"), help=argparse.SUPPRESS)
    add("--lane", default="interactive", help=argparse.SUPPRESS)
    add("--base-url", help=argparse.SUPPRESS)
    add("--store-url", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(given)
    if args.role == "batch":
        return _batch_role(args)
    if args.role == "interactive":
        return _interactive_role(args)
    require("python -m bridge.bench.priority", "redis", "redis")
    require("python -m bridge.bench.priority", "llm", "openai")
    with serve(rpm=args.rpm, latency=args.latency, jitter=args.latency / 5) as server:
        args.base_url = server.base_url
        scenarios = [_scenario(args, server, lane) for lane in ("interactive", "batch")]
    deadline = _deadline_trials(args.deadline_trials)
    text = table(scenarios, args.reserve, deadline, args.deadline_trials)
    print(text)
    if args.docs:
        write_docs(text, " ".join(["python -m bridge.bench.priority", *given]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
