"""``python -m bridge bench``: the side-by-side benchmark, its table, JSON and chart."""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge import MissingExtraError
from bridge._integration import require

from . import BENCH_MODULES
from ._approaches import Endpoint
from ._redact import Redactor, without_userinfo
from ._scenarios import SCENARIOS, Mode, headline

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_MISSING = 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bridge bench",
        # "--api=KEY" must not become --api-key=KEY: a mistyped flag is refused, never guessed.
        allow_abbrev=False,
        description="Compare the bridge with sequential code, threads, asyncio.run, asgiref "
        "and anyio on the same LLM workload, side by side, on an embedded simulated server.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes, about 30 s (smoke test)")
    size.add_argument("--full", action="store_true", help="the 4 s latency of the headline claim")
    parser.add_argument(
        "--scenario",
        type=_scenarios,
        default=list(SCENARIOS),
        help="comma-separated scenarios to run, from a,b,c,d,e,f (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="directory for results.json and bench.png (default ./bench-results)",
    )
    parser.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL"),
        help="run a small N against this OpenAI-compatible server instead "
        "(default: $OPENAI_BASE_URL)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY"),
        help="API key for --base-url (default: $OPENAI_API_KEY)",
    )
    parser.add_argument("--model", default="gpt-4o-mini", help="model for --base-url runs")
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="port for the embedded simulated server (default: a free one)",
    )
    parser.add_argument("--no-chart", action="store_true", help="skip bench.png")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse would echo them, and a value among them may be a key.
        flags = " ".join(arg.split("=", 1)[0] for arg in unknown if arg.startswith("-"))
        parser.error(
            f"unrecognized arguments: {flags or '(values not shown)'}; flags are spelled in "
            "full (no abbreviations), and values are not repeated here: see --help"
        )
    if args.base_url and not args.api_key:
        parser.error("--base-url needs --api-key (or OPENAI_API_KEY)")
    if args.base_url and args.scenario != list(SCENARIOS):
        parser.error("--scenario is for the simulated server; --base-url runs scenario (a) only")
    return args


def _scenarios(text: str) -> list[str]:
    keys = [key.strip().lower() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in SCENARIOS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown) or text!r}; choose from a,b,c,d,e,f"
        )
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; 0 on success, 2 for bad input (a flag, --out, --base-url, a port)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    # Every line printed and every string written goes through it: the key's value and a
    # password in --base-url are replaced, whatever spelling brought them in.
    redact = args.redact = Redactor.for_run(args.api_key, args.base_url)
    try:
        require("python -m bridge bench", "bench", *BENCH_MODULES)
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISSING
    try:
        _check_out(args.out)
        if args.base_url:
            _check_reachable(args.base_url)
    except ValueError as exc:
        print(redact(f"error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    mode = Mode(
        "quick" if args.quick else "full" if args.full else "default",
        quick=args.quick,
        full=args.full,
        port=args.port,
    )
    try:
        results = _run(args, mode)
    except _StartError as exc:
        print(redact(f"error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    return _save(redact.walk(results), args)


class _StartError(Exception):
    """The embedded server could not start."""


def _check_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create --out {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out {out} is not writable; pass another directory")


def _check_reachable(base_url: str) -> None:
    parts = urlsplit(base_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        shown = without_userinfo(base_url)
        raise ValueError(f"--base-url must look like https://host/v1, got {shown!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=5).close()
    except OSError as exc:
        raise ValueError(
            f"cannot reach {parts.scheme}://{parts.hostname}:{port} ({exc}); "
            "check --base-url, or leave it out to use the embedded simulated server"
        ) from None


def _run(args: argparse.Namespace, mode: Mode) -> dict[str, Any]:
    from bridge.testing import ServerStartError  # noqa: PLC0415

    results: dict[str, Any] = {"meta": _meta(args, mode)}
    with _Progress() as progress:
        if args.base_url:
            shown = args.redact(without_userinfo(args.base_url))
            print(f"Running a small workload against {shown} (not the simulated server).")
            endpoint = Endpoint(args.base_url, args.api_key, args.model, simulated=False)
            results["a"] = headline(Mode("quick", quick=True), progress.stepper("a", 6), endpoint)
            return results
        progress.total(sum(SCENARIOS[key].steps(mode) for key in args.scenario))
        started = time.perf_counter()
        for key in args.scenario:
            began = time.perf_counter()
            try:
                results[key] = SCENARIOS[key].run(mode, progress.stepper(key))
            except ServerStartError as exc:
                raise _StartError(f"the simulated server did not start: {exc}") from None
            results[key]["elapsed_s"] = round(time.perf_counter() - began, 1)
        results["meta"]["elapsed_s"] = round(time.perf_counter() - started, 1)
    return results


class _Progress:
    """A live bar on a terminal; on a pipe or a log, one plain line per step on stderr.

    Nothing of the live display reaches a stdout that is not a terminal: no frames, no
    escape codes, so the tables that follow are all a log holds.
    """

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None
        if sys.stdout.isatty():
            from rich.progress import Progress  # noqa: PLC0415 - the bench extra

            self._bar = Progress(transient=True)
            self._task = self._bar.add_task("bench", total=None)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def total(self, steps: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, total=steps)

    def stepper(self, key: str, steps: int | None = None) -> Callable[[str], None]:
        if steps is not None:
            self.total(steps)
        started = [False]

        def step(name: str) -> None:
            if self._bar is None:
                print(f"bench: ({key}) {name}", file=sys.stderr, flush=True)
                return
            if started[0]:
                self._bar.advance(self._task)
            started[0] = True
            self._bar.update(self._task, description=f"({key}) {name}")

        return step


def _meta(args: argparse.Namespace, mode: Mode) -> dict[str, Any]:
    return {
        "title": "llm-sync-bridge: side-by-side benchmark"
        + (f" ({mode.name} run)" if mode.name != "default" else ""),
        "mode": mode.name,
        "target": "real endpoint" if args.base_url else "embedded simulated server",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        # Redacted with the rest of the results before anything is printed or written.
        "command": " ".join(["python -m bridge bench", *args.argv]),
    }


def _save(results: dict[str, Any], args: argparse.Namespace) -> int:
    from ._report import draw_chart, print_tables, write_json  # noqa: PLC0415

    print_tables(results)
    path = write_json(results, args.out)  # results were redacted by the caller
    print(f"wrote {path}")
    if not args.no_chart:
        print(f"wrote {draw_chart(results, args.out)}")
    return 0
