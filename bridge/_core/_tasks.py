"""Coroutines that run on the bridge's loop on behalf of the blocking API."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from .._errors import surfaced

__all__ = ["as_coroutine", "run_bounded"]

T = TypeVar("T")


async def run_bounded(
    count: int,
    make: Callable[[int], Awaitable[Any]],
    *,
    limit: int,
    return_exceptions: bool,
    unstarted: Callable[[int], None] | None = None,
) -> list[Any]:
    """Await ``make(0) .. make(count - 1)`` with at most ``limit`` in flight; results in order.

    ``limit`` workers pull the next index from one shared iterator, so a million items
    cost ``limit`` tasks, not a million. With ``return_exceptions=False`` the first
    failure cancels the rest, and its exception is raised once they have finished.
    """
    results: list[Any] = [None] * count
    indices = iter(range(count))

    async def worker() -> None:
        for index in indices:
            try:
                results[index] = await make(index)
            except Exception as exc:
                if not return_exceptions:
                    raise
                results[index] = surfaced(exc)
            except asyncio.CancelledError as exc:
                if _cancelled_from_outside() or not return_exceptions:
                    raise
                results[index] = exc

    workers = [asyncio.ensure_future(worker()) for _ in range(min(limit, count))]
    try:
        await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        await _cancel_and_wait(workers)
        if unstarted is not None:
            for index in indices:
                unstarted(index)
    _raise_first_failure(workers)
    return results


def _cancelled_from_outside() -> bool:
    """Whether the current task itself is being cancelled (not merely an item it awaited)."""
    task = asyncio.current_task()
    if sys.version_info >= (3, 11) and task is not None:
        return task.cancelling() > 0
    return True  # Before 3.11 the two cannot be told apart; stopping is the safe choice.


async def _cancel_and_wait(tasks: Sequence[asyncio.Future[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _raise_first_failure(workers: Sequence[asyncio.Future[None]]) -> None:
    for worker in workers:
        if not worker.cancelled() and worker.exception() is not None:
            raise worker.exception()  # type: ignore[misc]  # checked just above
    for worker in workers:
        if worker.cancelled():
            # An item cancelled itself; its result slot would otherwise read None.
            raise concurrent.futures.CancelledError("an item was cancelled on the bridge's loop")


def as_coroutine(awaitable: Awaitable[T]) -> Coroutine[Any, Any, T]:
    """A coroutine for any awaitable, since only coroutines can become tasks."""
    if isinstance(awaitable, Coroutine):
        return awaitable
    return _await(awaitable)


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable
