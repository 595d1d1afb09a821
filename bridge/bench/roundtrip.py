"""Per-call cost of running one trivial coroutine from synchronous code, side by side.

Run ``python -m bridge.bench.roundtrip``. Every approach runs in the same process, in
interleaved rounds, and the median round is reported, so a noisy machine slows them all
alike and the ratios stay meaningful. Needs the ``bench`` extra (anyio, asgiref).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import bridge
from bridge._integration import require

from . import BENCH_MODULES

Approach = Callable[[], object]


async def trivial() -> int:
    return 1


@contextmanager
def _persistent_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The hand-rolled baseline: a loop in a thread and run_coroutine_threadsafe."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def approaches(stack: ExitStack) -> dict[str, Approach]:
    from anyio.from_thread import start_blocking_portal  # noqa: PLC0415 - bench extra
    from asgiref.sync import async_to_sync  # noqa: PLC0415 - bench extra

    b = stack.enter_context(bridge.Bridge(name="bench-bridge"))
    loop = stack.enter_context(_persistent_loop())
    portal = stack.enter_context(start_blocking_portal())
    to_sync = async_to_sync(trivial)
    return {
        "bridge.run": lambda: b.run(trivial()),
        "run_coroutine_threadsafe": lambda: asyncio.run_coroutine_threadsafe(
            trivial(), loop
        ).result(),
        "anyio portal.call": lambda: portal.call(trivial),
        "asgiref async_to_sync": to_sync,
        "asyncio.run": lambda: asyncio.run(trivial()),
    }


def measure(calls: int, rounds: int) -> dict[str, float]:
    """Median microseconds per call for each approach."""
    with ExitStack() as stack:
        runs = approaches(stack)
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for fn in runs.values():  # warm-up: start loops, threads and caches
            for _ in range(50):
                fn()
        for _ in range(rounds):
            for name, fn in runs.items():
                gc.collect()  # so nobody pays for the garbage the previous approach left
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.bench.roundtrip",
        description=__doc__.splitlines()[0],
        allow_abbrev=False,
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    require("python -m bridge.bench.roundtrip", "bench", *BENCH_MODULES)
    result = measure(args.calls, args.rounds)
    base = result["bridge.run"]
    if args.json:
        print(json.dumps({"us_per_call": result}, indent=2))
        return 0
    print(f"{'approach':<28}{'µs/call':>10}{'vs bridge':>11}")
    for name, micros in sorted(result.items(), key=lambda item: item[1]):
        print(f"{name:<28}{micros:>10.1f}{micros / base:>10.2f}x")
    print(f"\nbridge / anyio portal = {base / result['anyio portal.call']:.2f}")
    print(f"bridge / asgiref      = {base / result['asgiref async_to_sync']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
