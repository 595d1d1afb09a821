"""The same workload through each approach, written as a user would write it.

Every approach sends one chat completion per prompt and returns the reply texts in input
order; :func:`outcome` checks each reply against its prompt, so a fast approach that
returns wrong or missing answers cannot win.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import bridge

__all__ = [
    "APPROACHES",
    "Endpoint",
    "Outcome",
    "make_prompts",
    "run_approach",
]

MODEL = "bench-model"
MAX_TOKENS = 16


@dataclass(frozen=True)
class Endpoint:
    """Where the workload goes; ``api_key`` is never printed or written."""

    base_url: str
    api_key: str = field(repr=False)
    model: str = MODEL
    # The simulated server's replies carry a digest of their prompt, so each can be
    # checked; a real model's cannot, and any non-empty reply counts there.
    simulated: bool = True


@dataclass
class Outcome:
    wall_s: float
    ok: int
    failed: int
    errors: dict[str, int]
    # CPU seconds this process spent, all its threads together: the cost of the approach
    # itself, and far steadier than wall time on a machine shared with other work.
    cpu_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 4),
            "cpu_s": round(self.cpu_s, 4),
            "ok": self.ok,
            "failed": self.failed,
            "errors": self.errors,
        }


def make_prompts(n: int) -> list[str]:
    return [f"Summarise document {i}: the quarterly report, section {i % 7}." for i in range(n)]


def _request(endpoint: Endpoint, prompt: str) -> dict[str, Any]:
    return {
        "model": endpoint.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
    }


def _text(reply: Any) -> str:
    return str(reply.choices[0].message.content or "")


# -- 1. sequential sync client -------------------------------------------------------


def sequential(endpoint: Endpoint, prompts: Sequence[str], concurrency: int) -> list[Any]:
    import openai  # noqa: PLC0415 - the bench extra; imported where used

    with openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key) as client:
        return [_guard(_sync_call, client, endpoint, p) for p in prompts]


# -- 2. ThreadPoolExecutor with the sync client --------------------------------------


def thread_pool(endpoint: Endpoint, prompts: Sequence[str], concurrency: int) -> list[Any]:
    import openai  # noqa: PLC0415

    client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key)
    # The SDK's connection pool must be as large as the thread pool, or threads queue on it.
    client = client.with_options(http_client=_sync_http_client(concurrency))

    def one(prompt: str) -> Any:
        return _guard(_sync_call, client, endpoint, prompt)

    with client, ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, prompts))


def _sync_http_client(concurrency: int) -> Any:
    import httpx2  # noqa: PLC0415 - the HTTP client the official SDKs are built on
    import openai  # noqa: PLC0415

    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return openai.DefaultHttpxClient(limits=limits)


# -- 3. asyncio.run + gather + Semaphore with AsyncOpenAI ------------------------------


def _async_client(endpoint: Endpoint, *, aiohttp: bool, concurrency: int) -> Any:
    import httpx2  # noqa: PLC0415
    import openai  # noqa: PLC0415

    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    http_client = (
        openai.DefaultAioHttpClient(limits=limits)
        if aiohttp
        else openai.DefaultAsyncHttpxClient(limits=limits)
    )
    return openai.AsyncOpenAI(
        base_url=endpoint.base_url, api_key=endpoint.api_key, http_client=http_client
    )


async def _gather_all(
    endpoint: Endpoint, prompts: Sequence[str], concurrency: int, *, aiohttp: bool
) -> list[Any]:
    async with _async_client(endpoint, aiohttp=aiohttp, concurrency=concurrency) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(prompt: str) -> Any:
            async with semaphore:
                return await _aguard(client, endpoint, prompt)

        return await asyncio.gather(*(one(p) for p in prompts))


def asyncio_gather(endpoint: Endpoint, prompts: Sequence[str], concurrency: int) -> list[Any]:
    return asyncio.run(_gather_all(endpoint, prompts, concurrency, aiohttp=False))


def asyncio_gather_aiohttp(
    endpoint: Endpoint, prompts: Sequence[str], concurrency: int
) -> list[Any]:
    return asyncio.run(_gather_all(endpoint, prompts, concurrency, aiohttp=True))


# -- 4. asgiref async_to_sync, per call and per batch ----------------------------------


def asgiref_per_call(endpoint: Endpoint, prompts: Sequence[str], concurrency: int) -> list[Any]:
    """One module-level client, one ``async_to_sync`` call per prompt (Flask's pattern)."""
    from asgiref.sync import async_to_sync  # noqa: PLC0415

    client = _async_client(endpoint, aiohttp=False, concurrency=concurrency)
    call = async_to_sync(_aguard)
    return [_guard(call, client, endpoint, p) for p in prompts]


def asgiref_per_batch(endpoint: Endpoint, prompts: Sequence[str], concurrency: int) -> list[Any]:
    from asgiref.sync import async_to_sync  # noqa: PLC0415

    async def batch() -> list[Any]:
        return await _gather_all(endpoint, prompts, concurrency, aiohttp=False)

    return list(async_to_sync(batch)())


# -- 5. anyio BlockingPortal -----------------------------------------------------------


def anyio_portal(endpoint: Endpoint, prompts: Sequence[str], concurrency: int) -> list[Any]:
    from anyio.from_thread import start_blocking_portal  # noqa: PLC0415

    client = _async_client(endpoint, aiohttp=False, concurrency=concurrency)
    with start_blocking_portal() as portal:
        limiter = asyncio.Semaphore(concurrency)

        async def one(prompt: str) -> Any:
            async with limiter:
                return await _aguard(client, endpoint, prompt)

        futures = [portal.start_task_soon(one, p) for p in prompts]
        results = [future.result() for future in futures]
        portal.call(client.close)
    return results


# -- 6. and 7. the bridge ----------------------------------------------------------------


def bridge_client(endpoint: Endpoint, concurrency: int) -> Any:
    """``bridge.openai()`` with its default (aiohttp) transport, sized for ``concurrency``.

    The endpoint's cap is raised to the workload's concurrency, as a user running 1,000
    calls at once would; rpm and tpm stay at their default, learned from the headers.
    """
    limits = bridge.Limits(max_in_flight=max(concurrency, bridge.Limits().max_in_flight))
    return bridge.openai(base_url=endpoint.base_url, api_key=endpoint.api_key, limits=limits)


def bridge_map(endpoint: Endpoint, prompts: Sequence[str], concurrency: int) -> list[Any]:
    client = bridge_client(endpoint, concurrency)

    async def one(prompt: str) -> Any:
        return await _aguard(client, endpoint, prompt)

    try:
        return bridge.map(one, prompts, concurrency=concurrency)
    finally:
        bridge.run(client.close())


def bridge_per_call(endpoint: Endpoint, prompts: Sequence[str], concurrency: int) -> list[Any]:
    """One module-level client, one ``bridge.run`` per prompt: the pattern of scenario (f)."""
    client = bridge_client(endpoint, concurrency)
    try:
        return [bridge.run(_aguard(client, endpoint, p)) for p in prompts]
    finally:
        bridge.run(client.close())


async def _aguard(client: Any, endpoint: Endpoint, prompt: str) -> Any:
    """One async call; a failure becomes a value, so one error does not end the run."""
    try:
        return _text(await client.chat.completions.create(**_request(endpoint, prompt)))
    except Exception as exc:  # noqa: BLE001 - counted per kind in the outcome
        return exc


def _sync_call(client: Any, endpoint: Endpoint, prompt: str) -> str:
    return _text(client.chat.completions.create(**_request(endpoint, prompt)))


def _guard(call: Callable[..., Any], *args: Any) -> Any:
    try:
        return call(*args)
    except Exception as exc:  # noqa: BLE001 - counted per kind in the outcome
        return exc


Approach = Callable[[Endpoint, Sequence[str], int], list[Any]]

APPROACHES: dict[str, Approach] = {
    "sequential": sequential,
    "thread_pool": thread_pool,
    "asyncio_gather": asyncio_gather,
    "asyncio_gather_aiohttp": asyncio_gather_aiohttp,
    "asgiref_per_call": asgiref_per_call,
    "asgiref_per_batch": asgiref_per_batch,
    "anyio_portal": anyio_portal,
    "bridge": bridge_map,
    "bridge_per_call": bridge_per_call,
}


def outcome(
    prompts: Sequence[str], results: Sequence[Any], wall: float, *, simulated: bool = True
) -> Outcome:
    from bridge.testing import expected_digest  # noqa: PLC0415

    errors: Counter[str] = Counter()
    ok = 0
    for prompt, result in zip(prompts, results, strict=True):
        if isinstance(result, BaseException):
            errors[describe_error(result)] += 1
        elif str(result).startswith("digest=" + expected_digest(prompt)) or (
            not simulated and str(result).strip()
        ):
            ok += 1
        else:
            errors["wrong reply"] += 1
    return Outcome(wall, ok, len(prompts) - ok, dict(errors))


def describe_error(exc: BaseException) -> str:
    """A short kind for an error, looking through the SDK's wrapping to the cause."""
    seen: BaseException | None = exc
    while seen is not None:
        if "Event loop is closed" in str(seen):
            return "Event loop is closed"
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def run_approach(
    name: str, endpoint: Endpoint, prompts: Sequence[str], concurrency: int, *, warm_up: bool = True
) -> Outcome:
    """Time one approach on ``prompts``, after an untimed call that pays its import costs."""
    if warm_up:  # same concurrency: the bridge's endpoint limits are set by their first use
        APPROACHES[name](endpoint, prompts[:1], concurrency)
    gc.collect()  # so no approach pays for the garbage the one before it left
    start, cpu = time.perf_counter(), time.process_time()
    results = APPROACHES[name](endpoint, prompts, concurrency)
    result = outcome(prompts, results, time.perf_counter() - start, simulated=endpoint.simulated)
    result.cpu_s = time.process_time() - cpu
    return result
