"""The bounded thread pool for plain callables, and awaiting it from the loop.

Normally this is a ``ThreadPoolExecutor``. Under gevent monkey-patching its threads would
be greenlets started from the loop's OS thread, where no gevent hub ever runs them, so
the bridge uses a small pool of real OS threads built from the unpatched primitives.
"""

from __future__ import annotations

import _queue
import asyncio
import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from ._compat import gevent_patched, original

__all__ = ["Job", "Pool", "call_in_pool", "new_pool", "run_sync"]

T = TypeVar("T")


class Job(Protocol):
    future: asyncio.Future[Any]

    def cancel(self) -> bool:
        """Stop the job if it has not started; True when it will never run."""


class Pool(Protocol):
    def submit(self, fn: Callable[[], Any]) -> Job:
        """Queue ``fn``; the job's future belongs to the running loop of the caller."""

    def shutdown(self) -> None:
        """Drop queued jobs and let the threads end when their current job does."""


class _ExecutorJob:
    __slots__ = ("cancel", "future")

    def __init__(self, future: asyncio.Future[Any], cancel: Callable[[], bool]) -> None:
        self.future = future
        self.cancel = cancel


class ExecutorPool:
    """The ordinary case: a ``ThreadPoolExecutor``."""

    def __init__(self, size: int, name: str) -> None:
        self.executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"{name}-worker")

    def submit(self, fn: Callable[[], Any]) -> Job:
        submitted = self.executor.submit(fn)
        return _ExecutorJob(asyncio.wrap_future(submitted), submitted.cancel)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class _OSThreadJob:
    __slots__ = ("_fn", "_loop", "_state", "future")

    def __init__(self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> None:
        self._fn = fn
        self._loop = loop
        self._state = "queued"  # -> "running" | "skipped"; each write is a single store
        self.future: asyncio.Future[Any] = loop.create_future()

    def cancel(self) -> bool:
        if self._state == "queued":
            self._state = "skipped"
        return self._state == "skipped"

    def run(self) -> None:
        if self._state != "queued":
            return
        self._state = "running"
        try:
            result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting task, as an executor does
            self._deliver(_set_exception, exc)
        else:
            self._deliver(_set_result, result)

    def _deliver(self, setter: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while we ran
            self._loop.call_soon_threadsafe(setter, self.future, value)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class OSThreadPool:
    """Real OS threads and an unpatched queue, for processes that gevent has patched."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        # The C queue blocks on real OS locks; gevent patches only queue.SimpleQueue.
        self._queue: _queue.SimpleQueue[_OSThreadJob | None] = _queue.SimpleQueue()
        self._lock: Any = original("_thread", "allocate_lock")()
        self._start_thread: Any = original("_thread", "start_new_thread")
        self._threads = 0
        self._idle = 0

    def submit(self, fn: Callable[[], Any]) -> Job:
        job = _OSThreadJob(fn, asyncio.get_running_loop())
        self._queue.put(job)
        with self._lock:
            grow = self._idle == 0 and self._threads < self._size
            if grow:
                self._threads += 1
        if grow:
            self._start_thread(self._work, ())
        return job

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = self._queue.get()
            with self._lock:
                self._idle -= 1
            if job is None:
                return
            job.run()

    def shutdown(self) -> None:
        for _ in range(self._threads):
            self._queue.put(None)


def new_pool(size: int, name: str) -> ExecutorPool | OSThreadPool:
    return OSThreadPool(size, name) if gevent_patched() else ExecutorPool(size, name)


async def call_in_pool(pool: Pool, fn: Callable[[], T], grace: float) -> T:
    """Run ``fn`` in ``pool``; on cancellation, wait up to ``grace`` s for a started call.

    Python cannot interrupt a thread, so a call that already started runs to its end;
    waiting for it (bounded) keeps "cancelled" meaning "nothing is still running".
    """
    job = pool.submit(fn)
    try:
        return await asyncio.shield(job.future)
    except asyncio.CancelledError:
        if not job.cancel():
            await asyncio.wait([job.future], timeout=grace)
        if job.future.done() and not job.future.cancelled():
            job.future.exception()  # retrieved, so asyncio does not log it as forgotten
        raise


async def run_sync(pool: Pool, fn: Callable[..., Any], arg: Any, grace: float) -> Any:
    """Run a plain callable in the pool, in a copy of the task's context.

    A plain function that returns an awaitable (``lambda d: client.create(...)``) has its
    awaitable awaited here, on the loop, so such lambdas work as users expect.
    """
    ctx = contextvars.copy_context()
    result = await call_in_pool(pool, functools.partial(ctx.run, fn, arg), grace)
    if inspect.isawaitable(result):
        return await result
    return result
