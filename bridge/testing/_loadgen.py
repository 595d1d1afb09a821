"""``python -m bridge.testing loadgen``: how many non-streaming requests/s one server answers.

The server runs in its own process (started with :func:`serve` unless ``--url``
is given) and the load comes from ``--processes`` other processes, each with an
aiohttp client keeping ``--concurrency`` keep-alive connections busy. The loop
is bounded by ``--requests`` and ``--time-limit``, and only loopback is used.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import time
from dataclasses import dataclass

from ._handle import serve

__all__ = ["run_loadgen"]

_PATHS = {"chat": "/chat/completions", "messages": "/messages", "embeddings": "/embeddings"}


@dataclass(frozen=True)
class _Result:
    ok: int
    failed: int
    started: float
    finished: float


def _body(endpoint: str, index: int) -> bytes:
    text = f"load test prompt number {index}"
    if endpoint == "embeddings":
        return json.dumps({"model": "sim-embed", "input": text}).encode()
    body = {"model": "sim", "max_tokens": 32, "messages": [{"role": "user", "content": text}]}
    return json.dumps(body).encode()


async def _drive(
    url: str, requests: int, concurrency: int, endpoint: str, time_limit: float
) -> _Result:
    import aiohttp  # noqa: PLC0415 -- only the load generator needs the client

    target = url + _PATHS[endpoint]
    bodies = [_body(endpoint, i) for i in range(16)]
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer loadgen",
        "x-api-key": "loadgen",
        "anthropic-version": "2023-06-01",
    }
    left = [requests]
    counts = [0, 0]
    deadline = time.monotonic() + time_limit

    async def worker(session: aiohttp.ClientSession, index: int) -> None:
        while left[0] > 0 and time.monotonic() < deadline:
            left[0] -= 1
            async with session.post(target, data=bodies[index % 16]) as response:
                await response.read()
                counts[response.status != 200] += 1
            index += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        started = time.time()
        await asyncio.gather(*(worker(session, i) for i in range(concurrency)))
        finished = time.time()
    return _Result(counts[0], counts[1], started, finished)


def _process(args: tuple[str, int, int, str, float]) -> _Result:
    return asyncio.run(_drive(*args))


def _measure(
    url: str, *, requests: int, concurrency: int, processes: int, endpoint: str, time_limit: float
) -> list[_Result]:
    share = [requests // processes + (i < requests % processes) for i in range(processes)]
    jobs = [(url, n, concurrency, endpoint, time_limit) for n in share]
    if processes == 1:
        return [_process(jobs[0])]
    # spawn, not fork: the parent may hold threads (and a server handle).
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return pool.map(_process, jobs)


def run_loadgen(
    *,
    url: str | None,
    requests: int,
    concurrency: int,
    processes: int,
    endpoint: str,
    time_limit: float,
) -> int:
    """Drive a server with load and print the requests/s; returns the exit code."""

    def measure(base_url: str) -> list[_Result]:
        return _measure(
            base_url,
            requests=requests,
            concurrency=concurrency,
            processes=processes,
            endpoint=endpoint,
            time_limit=time_limit,
        )

    if url is not None:
        results = measure(url.rstrip("/"))
    else:
        with serve() as server:
            results = measure(server.base_url)
    ok = sum(r.ok for r in results)
    failed = sum(r.failed for r in results)
    elapsed = max(r.finished for r in results) - min(r.started for r in results)
    print(
        f"endpoint={endpoint} processes={processes} concurrency={concurrency} cpus={os.cpu_count()}"
    )
    print(f"{ok} ok, {failed} failed in {elapsed:.2f} s: {ok / elapsed:,.0f} requests/s")
    return 0 if failed == 0 and ok > 0 else 1
