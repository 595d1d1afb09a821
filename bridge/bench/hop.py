"""What a request costs when it hops from another event loop to the bridge's.

Run ``python -m bridge.bench.hop``. One simulated server at zero latency, one
``bridge.openai()`` client, and the same sequential requests made two ways, in interleaved
rounds:

- **native**: on the bridge's own loop (``bridge.run`` of a coroutine that makes them);
- **hop**: on a foreign loop (``asyncio.run`` in the main thread), so that each request,
  and each chunk of a streamed body, makes the round trip to the bridge's loop and back.

It prints the median microseconds per call of each, and the hop's cost: per request (the
median of the rounds' differences), and per streamed chunk (the streamed difference, less
one request's hop, over the chunks per stream). Streams come from a second server whose events are
``--chunk-delay`` apart, so that each event is a chunk of its own, as an LLM's tokens
are. "empty hop" is the round trip of a coroutine that does nothing: what a chunk costs
when it is already waiting. Needs the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import bridge
from bridge._admission._hop import call_on
from bridge._core._default import default_loop
from bridge._extras import require
from bridge.testing import serve

from . import BENCH_MODULES

__all__ = ["measure"]

_MESSAGES = [{"role": "user", "content": "Summarise the hop in a few words."}]


async def _requests(client: Any, calls: int) -> int:
    for _ in range(calls):
        await client.chat.completions.create(model="bench", messages=_MESSAGES)
    return 0


async def _streams(client: Any, calls: int) -> int:
    """Streamed requests, read as the transport hands them over; returns the chunks seen."""
    chunks = 0
    for _ in range(calls):
        create = client.chat.completions.with_streaming_response.create
        async with create(model="bench", messages=_MESSAGES, stream=True, max_tokens=32) as r:
            async for _chunk in r.iter_bytes():
                chunks += 1
    return chunks


async def _empty_hops(_client: Any, calls: int) -> int:
    loop = default_loop()
    for _ in range(calls):
        await call_on(loop, _nothing)
    return 0


async def _nothing() -> None:
    return None


Work = Callable[[Any, int], Coroutine[Any, Any, int]]
Run = Callable[[Coroutine[Any, Any, int]], int]


def _timed(run: Run, work: Work, client: Any, calls: int) -> tuple[float, int]:
    gc.collect()
    start = time.perf_counter()
    count = run(work(client, calls))
    return (time.perf_counter() - start) / calls * 1e6, count


def _rounds(
    ways: dict[str, tuple[Run, Work]], client: Any, calls: int, rounds: int
) -> tuple[dict[str, list[float]], int]:
    """µs per call of each way, round by round, and the median count they returned (a
    stream's events now and then arrive together, as one chunk, on a busy machine)."""
    for run, work in ways.values():  # warm-up: loops, pools, imports, reply models
        _timed(run, work, client, 10)
    micros: dict[str, list[float]] = {name: [] for name in ways}
    counts: list[int] = []
    for _ in range(rounds):
        for name, (run, work) in ways.items():
            took, count = _timed(run, work, client, calls)
            micros[name].append(took)
            counts.append(count)
    return micros, int(statistics.median(counts))


def _paired(hopped: list[float], native: list[float]) -> float:
    """The median of the rounds' differences: steadier on a busy machine than the
    difference of the medians, since both ways of one round see the same load."""
    return statistics.median(h - n for h, n in zip(hopped, native, strict=True))


def measure(calls: int, rounds: int, chunk_delay: float) -> dict[str, float]:
    """µs per request natively and hopped, and the hop's cost per request and per chunk."""
    streams = max(1, calls // 10)
    with serve(latency=0.0) as server:
        client = bridge.openai(base_url=server.base_url, api_key="sk-bench-hop")
        plain, _ = _rounds(
            {
                "empty hop": (asyncio.run, _empty_hops),
                "native": (bridge.run, _requests),
                "hop": (asyncio.run, _requests),
            },
            client,
            calls,
            rounds,
        )
        bridge.run(client.close())
    with serve(latency=0.0, chunk_delay=chunk_delay) as server:
        client = bridge.openai(base_url=server.base_url, api_key="sk-bench-hop")
        streamed, chunks = _rounds(
            {"native stream": (bridge.run, _streams), "hop stream": (asyncio.run, _streams)},
            client,
            streams,
            rounds,
        )
        bridge.run(client.close())
    result = {name: statistics.median(values) for name, values in {**plain, **streamed}.items()}
    hop = _paired(plain["hop"], plain["native"])
    per_stream = chunks / streams
    result["hop per request"] = hop
    result["chunks per stream"] = per_stream
    stream_hop = _paired(streamed["hop stream"], streamed["native stream"])
    result["hop per chunk"] = (stream_hop - hop) / per_stream
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.bench.hop",
        description=__doc__.splitlines()[0],
        allow_abbrev=False,
    )
    parser.add_argument("--calls", type=int, default=100, help="requests per round (default 100)")
    parser.add_argument("--rounds", type=int, default=31, help="interleaved rounds (default 31)")
    parser.add_argument(
        "--chunk-delay",
        type=float,
        default=0.001,
        help="seconds between a stream's events (default 0.001), so that each is a chunk",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    require("python -m bridge.bench.hop", "bench", *BENCH_MODULES)
    result = measure(args.calls, args.rounds, args.chunk_delay)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    streams = max(1, args.calls // 10)
    print(
        f"{args.calls} requests and {streams} streams per round (one at a time), "
        f"{args.rounds} rounds; stream events {args.chunk_delay * 1e3:g} ms apart"
    )
    for name in ("native", "hop", "empty hop", "native stream", "hop stream"):
        print(f"{name:<18}{result[name]:>10.1f} µs per call")
    print(f"{'chunks per stream':<18}{result['chunks per stream']:>10.1f}")
    print(f"{'hop per request':<18}{result['hop per request']:>10.1f} µs")
    print(f"{'hop per chunk':<18}{result['hop per chunk']:>10.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
