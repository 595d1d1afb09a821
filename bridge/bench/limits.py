"""Admission control on first contact, and against a rate-limited server: the figures.

``python -m bridge.bench.limits`` runs the first-contact scenarios (``--only`` picks some;
see :mod:`._contact`): a cold process, a server without rate-limit headers, tokens charged
up front, today's server with headers, and bench (a) in a fresh process. It prints one
Markdown table, the one in docs/limits.md.

``python -m bridge.bench.limits --naive`` runs the older comparison instead. It starts one
simulated server (``--rpm 1200``, a 1 s burst, ``--latency`` per reply) and sends the same
job three ways, resetting the server in between:

- **naive**: ``asyncio.gather`` with a ``Semaphore(50)`` and ``AsyncOpenAI``'s default
  retries (2, honouring ``retry-after`` up to its ceiling);
- **bridge, configured**: ``bridge.openai(limits=Limits(rpm=1200, max_in_flight=50))``;
- **bridge, learned**: ``bridge.openai()``, limits learned from the ``x-ratelimit-*`` headers.

It prints, for each: failed calls, 429 responses (from the server's counters), wall time
and wall time over the ideal (calls / rate). The main bench calls :func:`scenario`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bridge
from bridge._integration import require
from bridge.testing import SimulatedServer, expected_digest, serve

from . import BENCH_MODULES
from ._contact import SCENARIOS
from ._targets import target

__all__ = ["Result", "scenario", "scenarios"]


@dataclass(frozen=True)
class Result:
    name: str
    calls: int
    failed: int
    rate_limited: int
    wall: float
    ideal: float

    @property
    def ratio(self) -> float:
        return self.wall / self.ideal

    def row(self) -> str:
        return (
            f"| {self.name} | {self.calls} | {self.failed} | {self.rate_limited} "
            f"| {self.wall:.2f} s | {self.ratio:.3f} |"
        )


def _prompt(i: int) -> str:
    return f"question {i}"


def _ok(i: int, content: str | None) -> bool:
    return (content or "").startswith("digest=" + expected_digest(_prompt(i)))


def naive(server: SimulatedServer, calls: int, concurrency: int = 50) -> tuple[int, float]:
    """gather + Semaphore + the SDK's default retries; (failed, wall seconds)."""
    import openai  # noqa: PLC0415 - the llm extra

    async def job() -> int:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="bench-naive")
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> bool:
            async with gate:
                reply = await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": _prompt(i)}]
                )
                return _ok(i, reply.choices[0].message.content)

        try:
            results = await asyncio.gather(*(one(i) for i in range(calls)), return_exceptions=True)
        finally:
            await client.close()
        return sum(1 for r in results if r is not True)

    start = time.monotonic()
    failed = asyncio.run(job())
    return failed, time.monotonic() - start


def with_bridge(
    server: SimulatedServer,
    calls: int,
    limits: bridge.Limits | None,
    key: str,
    concurrency: int = 50,
) -> tuple[int, float]:
    """``bridge.map`` over ``bridge.openai()``; (failed, wall seconds)."""
    client = bridge.openai(base_url=server.base_url, api_key=key, limits=limits)

    async def one(i: int) -> bool:
        reply = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": _prompt(i)}]
        )
        return _ok(i, reply.choices[0].message.content)

    start = time.monotonic()
    results = bridge.map(one, range(calls), concurrency=concurrency, return_exceptions=True)
    wall = time.monotonic() - start
    bridge.run(client.close())
    return sum(1 for r in results if r is not True), wall


def scenarios(
    server: SimulatedServer, calls: int = 300, rpm: int = 1200, tag: str = ""
) -> list[Result]:
    """The three runs on ``server`` (which must enforce ``rpm``), each after a reset."""
    ideal = calls / (rpm / 60.0)
    runs: list[tuple[str, Callable[[], tuple[int, float]]]] = [
        ("naive: gather + Semaphore(50), SDK retries", lambda: naive(server, calls)),
        (
            f"bridge, configured Limits(rpm={rpm}, max_in_flight=50)",
            lambda: with_bridge(
                server, calls, bridge.Limits(rpm=rpm, max_in_flight=50), f"bench-conf{tag}"
            ),
        ),
        (
            "bridge, learned from headers",
            lambda: with_bridge(server, calls, None, f"bench-learn{tag}"),
        ),
    ]
    results = []
    for name, run in runs:
        server.reset()
        failed, wall = run()
        limited = server.stats()["status_counts"].get("429", 0)
        results.append(Result(name, calls, failed, limited, wall, ideal))
    return results


def scenario(mode: Any, progress: Callable[[str], None]) -> dict[str, Any]:
    """Scenario (d) of the main bench: ``mode.pick(quick, default, full)`` sizes it."""
    # 120 calls (6 s at the limit) keep the default bench within its 2-minute budget; the
    # ratio targets do not depend on the size, and --full runs the 300.
    calls, rpm = mode.pick(40, 120, 300), 1200
    progress(f"{calls} calls against rpm={rpm}: naive, configured, learned")
    with serve(port=mode.port, rpm=rpm, latency=0.5, jitter=0.1) as server:
        results = scenarios(server, calls, rpm)
    naive_run, configured, learned = results
    return {
        "title": f"(d) rate-limited server: {calls} calls, rpm {rpm}",
        "workload": {
            "calls": calls,
            "rpm": rpm,
            "latency_s": 0.5,
            "ideal_wall_s": results[0].ideal,
        },
        "unit": "failed calls",
        "approaches": {
            key: {
                "failed": r.failed,
                "rate_limited": r.rate_limited,
                "wall_s": round(r.wall, 3),
                "wall_over_ideal": round(r.ratio, 3),
            }
            for key, r in zip(
                ("naive", "bridge_configured", "bridge_learned"), results, strict=True
            )
        },
        "targets": [
            target("configured: failed", configured.failed, 0, at_least=False),
            target("configured: 429 share", configured.rate_limited / calls, 0.02, at_least=False),
            target("configured: wall / ideal", configured.ratio, 1.10, at_least=False),
            target("learned: failed", learned.failed, 0, at_least=False),
            target("learned: wall / ideal", learned.ratio, 1.30, at_least=False),
        ],
        # Recorded for the docs, not a target: the naive run is expected to fail calls.
        "recorded": {"naive_failed": naive_run.failed, "naive_429s": naive_run.rate_limited},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.bench.limits", description=__doc__, allow_abbrev=False
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        help="run this first-contact scenario only (repeatable; default: all)",
    )
    parser.add_argument("--naive", action="store_true", help="naive versus the bridge instead")
    parser.add_argument("--calls", type=int, default=300, help="--naive: calls (default 300)")
    parser.add_argument("--rpm", type=int, default=1200, help="--naive: server rpm (1200)")
    parser.add_argument("--latency", type=float, default=0.5, help="--naive: seconds (0.5)")
    parser.add_argument("--jitter", type=float, default=0.1, help="--naive: ± seconds (0.1)")
    parser.add_argument("--rounds", type=int, default=1, help="--naive: rounds (default 1)")
    args = parser.parse_args(argv)
    require("python -m bridge.bench.limits", "bench", *BENCH_MODULES)
    if args.naive:
        _naive_table(args)
        return
    print("| scenario | calls | failed | 429s (share of attempts) | wall | wall / ideal | target |")
    print("|---|---|---|---|---|---|---|")
    for name in args.only or SCENARIOS:
        print(SCENARIOS[name]().markdown(), flush=True)


def _naive_table(args: argparse.Namespace) -> None:
    print(
        f"{args.calls} calls, server rpm={args.rpm} (1 s burst), latency {args.latency} s "
        f"± {args.jitter} s; ideal = {args.calls / (args.rpm / 60):.1f} s"
    )
    print("| run | calls | failed | 429s | wall | wall / ideal |")
    print("|---|---|---|---|---|---|")
    with serve(rpm=args.rpm, latency=args.latency, jitter=args.jitter) as server:
        for round_ in range(args.rounds):
            for result in scenarios(server, args.calls, args.rpm, tag=f"-{round_}"):
                print(result.row(), flush=True)


if __name__ == "__main__":
    main()
