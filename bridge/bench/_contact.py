"""The first-contact scenarios of ``python -m bridge.bench.limits``.

Each one plays a situation a new user meets, with nothing configured unless it says so,
against the simulated server in the matching mode, and returns one table row: calls,
failures, 429s and attempts (from the server's own counters), wall time and its ratio to
the ideal. Cold scenarios run in a fresh interpreter, so nothing is learned or imported
beforehand.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bridge
from bridge.testing import SimulatedServer, expected_digest, serve

__all__ = ["SCENARIOS", "Row"]


@dataclass(frozen=True)
class Row:
    """One measured scenario; ``ideal`` is the least wall time the situation allows."""

    name: str
    calls: int
    failed: int
    rate_limited: int | None  # None: the run's server was not ours to count
    attempts: int | None
    wall: float
    ideal: float
    target: str

    def markdown(self) -> str:
        if self.rate_limited is None or not self.attempts:
            limited = "n/a (no rate limit)"
        else:
            share = self.rate_limited / self.attempts
            limited = f"{self.rate_limited} ({share:.1%} of {self.attempts})"
        return (
            f"| {self.name} | {self.calls} | {self.failed} | {limited} "
            f"| {self.wall:.2f} s | {self.wall / self.ideal:.3f} | {self.target} |"
        )


def _counts(server: SimulatedServer) -> tuple[int, int]:
    stats = server.stats()
    limited = int(stats["status_counts"].get("429", 0))
    return limited, int(stats["requests"]) + limited


_CHILD = textwrap.dedent(
    """
    import json, sys, time, bridge
    url, calls, concurrency, max_tokens = sys.argv[1], *map(int, sys.argv[2:5])
    client = bridge.openai(base_url=url, api_key="sk-bench-cold")
    options = {"max_tokens": max_tokens} if max_tokens else {}

    async def call(i):
        r = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"question {i}"}], **options)
        return r.choices[0].message.content.startswith("digest=")

    start = time.monotonic()
    results = bridge.map(call, range(calls), concurrency=concurrency, return_exceptions=True)
    wall = time.monotonic() - start
    print(json.dumps({"wall": wall, "failed": sum(r is not True for r in results)}))
    """
)


def _cold(server: SimulatedServer, calls: int, concurrency: int, max_tokens: int = 0) -> Any:
    """Run the job in a fresh interpreter; the server is reset first."""
    server.reset()
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [
            sys.executable,
            "-c",
            _CHILD,
            server.base_url,
            str(calls),
            str(concurrency),
            str(max_tokens),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout)


def _warm(server: SimulatedServer, calls: int, concurrency: int, max_tokens: int) -> Any:
    """Learn the limits with a few calls in this process, reset the server, then measure."""
    client = bridge.openai(base_url=server.base_url, api_key=f"sk-bench-warm-{time.time_ns()}")

    async def call(i: int) -> bool:
        reply = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": f"question {i}"}],
            max_tokens=max_tokens or None,
        )
        return (reply.choices[0].message.content or "").startswith(
            "digest=" + expected_digest(f"question {i}")
        )

    bridge.map(call, range(3))
    server.reset()
    start = time.monotonic()
    results = bridge.map(call, range(calls), concurrency=concurrency, return_exceptions=True)
    return {"wall": time.monotonic() - start, "failed": sum(r is not True for r in results)}


def cold_start(headers: bool, latency: float = 0.5) -> Row:
    """20 calls at concurrency 20, generous limits: no request goes first, alone."""
    with serve(latency=latency, rpm=60_000, tpm=10_000_000, rate_limit_headers=headers) as s:
        run = _cold(s, 20, 20)
        limited, attempts = _counts(s)
    label = "with" if headers else "without"
    return Row(
        f"cold process, generous limits, {label} headers, 20 calls at c=20",
        20, run["failed"], limited, attempts, run["wall"], latency, "wall ≤ 1.3 x latency",
    )  # fmt: skip


def no_headers(latency: float = 0.5) -> Row:
    """A gateway that answers 429 + retry-after only; rpm 1200, 300 calls, nothing set."""
    with serve(rpm=1200, latency=latency, jitter=0.1, rate_limit_headers=False) as s:
        run = _cold(s, 300, 50)
        limited, attempts = _counts(s)
    return Row(
        "no rate-limit headers, rpm 1200, 300 calls at c=50",
        300, run["failed"], limited, attempts, run["wall"], 15.0,
        "0 failed, ≤ 5 % 429, wall ≤ 1.25 x ideal",
    )  # fmt: skip


def up_front_tokens(accounting: str, *, cold: bool, latency: float = 0.5) -> Row:
    """tpm 40,000 charged up front (no refund), max_tokens 200, 120 calls, nothing set."""
    with serve(tpm=40_000, latency=latency, jitter=0.1, token_accounting=accounting) as s:
        run = _cold(s, 120, 50, 200) if cold else _warm(s, 120, 50, 200)
        limited, attempts = _counts(s)
        tokens = s.stats()["tokens_in"]
    per_call = tokens / 120 + 200  # what the server charged each call
    ideal = 120 * (per_call if accounting == "sum" else max(per_call - 200, 200)) / (40_000 / 60)
    state = "cold process" if cold else "limits learned"
    return Row(
        f"tokens charged up front ({accounting}), tpm 40,000, max_tokens 200, {state}",
        120, run["failed"], limited, attempts, run["wall"], ideal,
        "0 failed, ≤ 3 % 429" if not cold else "0 failed (the opening burst may 429)",
    )  # fmt: skip


def with_headers(latency: float = 0.5) -> Row:
    """Today's case: a server with x-ratelimit-* headers, rpm 1200, nothing configured."""
    with serve(rpm=1200, latency=latency, jitter=0.1) as s:
        run = _cold(s, 300, 50)
        limited, attempts = _counts(s)
    return Row(
        "headers present, rpm 1200, 300 calls at c=50, cold process",
        300, run["failed"], limited, attempts, run["wall"], 15.0,
        "0 failed, ≤ 2 % 429, wall ≤ 1.10 x ideal",
    )  # fmt: skip


def bench_a_fresh() -> Row:
    """Scenario (a) of the main bench, alone, in a fresh process."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, "-m", "bridge", "bench", "--scenario", "a", "--out", out],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        result = json.loads((Path(out) / "results.json").read_text())["a"]
    bridge_run = result["approaches"]["bridge"]
    ideal = result["workload"]["ideal_wall_s"]
    return Row(
        "bench (a) in a fresh process: 100 calls of 0.4 s at c=10",
        100, bridge_run["failed"], None, None, bridge_run["wall_s"], ideal, "wall ≤ 1.05 x ideal",
    )  # fmt: skip


SCENARIOS: dict[str, Callable[[], Row]] = {
    "cold-headers": lambda: cold_start(headers=True),
    "cold-no-headers": lambda: cold_start(headers=False),
    "no-headers": no_headers,
    "tokens-sum-cold": lambda: up_front_tokens("sum", cold=True),
    "tokens-sum-learned": lambda: up_front_tokens("sum", cold=False),
    "tokens-max-learned": lambda: up_front_tokens("max", cold=False),
    "headers": with_headers,
    "bench-a": bench_a_fresh,
}
