"""Does memory grow with the number of calls? The bridge and the plain SDK, side by side.

``python -m bridge.bench.soak --calls 200000`` starts the simulated server (zero latency)
and, in two fresh interpreters one after the other, makes the same calls:

- **bridge**: ``bridge.map`` over a ``bridge.openai()`` client, 64 at a time;
- **sdk**: ``asyncio.gather`` with a ``Semaphore(64)`` over an ``AsyncOpenAI`` on the SDK's
  own aiohttp transport (``DefaultAioHttpClient``), the same transport the bridge uses.

Each samples its resident set size (``/proc/self/statm``) and Python's allocated blocks
every ``--every`` calls, and the script prints the slope of RSS over the second half of the
run (the first half warms up allocator arenas and pools) in MB per 1,000 calls. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

from bridge._integration import require

from . import BENCH_MODULES

__all__ = ["main", "slope"]

_COMMON = """
import asyncio, json, os, sys
calls, every, url = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
PAGE = os.sysconf("SC_PAGE_SIZE")
samples = []

def sample(done):
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * PAGE / 1e6
    samples.append([done, rss, sys.getallocatedblocks()])

MESSAGES = [{"role": "user", "content": "soak"}]
"""

_BRIDGE = """
import bridge
client = bridge.openai(base_url=url, api_key="sk-soak-bridge")

async def call(i):
    r = await client.chat.completions.create(model="m", messages=MESSAGES)
    return r.choices[0].message.content is not None

for start in range(0, calls, every):
    assert all(bridge.map(call, range(start, start + every), concurrency=64))
    sample(start + every)
print(json.dumps(samples))
"""

_SDK = """
import openai

async def main():
    client = openai.AsyncOpenAI(
        base_url=url, api_key="sk-soak-sdk", http_client=openai.DefaultAioHttpClient())
    gate = asyncio.Semaphore(64)

    async def call(i):
        async with gate:
            r = await client.chat.completions.create(model="m", messages=MESSAGES)
            return r.choices[0].message.content is not None

    for start in range(0, calls, every):
        assert all(await asyncio.gather(*(call(i) for i in range(start, start + every))))
        sample(start + every)
    await client.close()

asyncio.run(main())
print(json.dumps(samples))
"""


def slope(samples: list[list[float]]) -> float:
    """Least-squares slope of RSS (MB) per 1,000 calls over the second half of the run."""
    half = samples[len(samples) // 2 :]
    xs = [s[0] / 1000 for s in half]
    ys = [s[1] for s in half]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def _run(body: str, calls: int, every: int, url: str) -> list[list[float]]:
    code = textwrap.dedent(_COMMON) + textwrap.dedent(body)
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", code, str(calls), str(every), url],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    samples: list[list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.bench.soak", description=__doc__, allow_abbrev=False
    )
    parser.add_argument("--calls", type=int, default=200_000, help="calls per run (200000)")
    parser.add_argument("--every", type=int, default=5_000, help="calls per sample (5000)")
    args = parser.parse_args(argv)
    if args.calls < 4 * args.every or args.every < 1:
        parser.error("--calls must be at least 4 x --every, and --every at least 1")
    require("python -m bridge.bench.soak", "bench", *BENCH_MODULES)
    from bridge.testing import serve  # noqa: PLC0415 - after the extra is checked

    print(
        f"{args.calls:,} calls each, zero latency, 64 at a time; RSS sampled every {args.every:,}"
    )
    print(
        "| run | RSS first | RSS last | slope, 2nd half (MB / 1,000 calls) | blocks first -> last |"
    )
    print("|---|---|---|---|---|")
    with serve() as server:
        for name, body in (("bridge", _BRIDGE), ("sdk", _SDK)):
            samples = _run(body, args.calls, args.every, server.base_url)
            first, last = samples[0], samples[-1]
            print(
                f"| {name} | {first[1]:.1f} MB | {last[1]:.1f} MB | {slope(samples):.4f} "
                f"| {first[2]:,} -> {last[2]:,} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
