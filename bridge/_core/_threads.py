"""The bounded thread pool for plain callables, and the loop that uses it as its executor.

Not a ``ThreadPoolExecutor``, for two reasons:

- concurrent.futures joins its worker threads at interpreter exit, with no time limit and
  before any ``atexit`` hook runs, so one slow job would hold up exit past
  ``cancel_timeout``. These threads are daemonic and the bridge's own shutdown bounds them.
- Under gevent monkey-patching, executor threads would be greenlets started from the loop's
  OS thread, where no gevent hub ever runs them. These are real OS threads with an
  unpatched queue and lock.

The loop routes ``run_in_executor(None, ...)`` here as well, so ``asyncio.to_thread`` and
``loop.getaddrinfo`` (every HTTP client's DNS lookup) share the same bound.
"""

from __future__ import annotations

import _queue
import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ._compat import gevent_patched, original, start_os_thread

__all__ = [
    "BridgeEventLoop",
    "Job",
    "ThreadPool",
    "call_in_pool",
    "in_pool_thread",
    "new_loop",
    "run_sync",
]

T = TypeVar("T")

_QUEUED, _RUNNING, _SKIPPED = "queued", "running", "skipped"
_pool_thread = threading.local()


def in_pool_thread(pool: ThreadPool) -> bool:
    """Whether the current thread is one of ``pool``'s workers."""
    return getattr(_pool_thread, "pool", None) is pool


def _lock() -> Any:
    return original("_thread", "allocate_lock")() if gevent_patched() else threading.Lock()


class Job:
    """One call queued on the pool; its future belongs to the loop that submitted it."""

    __slots__ = ("_fn", "_lock", "_loop", "_state", "future")

    def __init__(self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> None:
        self._fn = fn
        self._loop = loop
        self._lock = _lock()
        self._state = _QUEUED
        self.future: asyncio.Future[Any] = loop.create_future()

    def cancel(self) -> bool:
        """Stop the job if it has not started; True when it will never run."""
        with self._lock:
            if self._state == _QUEUED:
                self._state = _SKIPPED
            return self._state == _SKIPPED

    def run(self) -> None:
        with self._lock:
            if self._state != _QUEUED:
                return
            self._state = _RUNNING
        try:
            result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting task
            self._deliver(_set_exception, exc)
        else:
            self._deliver(_set_result, result)

    def _deliver(self, setter: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while the job ran
            self._loop.call_soon_threadsafe(setter, self.future, value)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class ThreadPool:
    """At most ``size`` daemon OS threads, started as work arrives."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        # The C queue blocks on real OS locks; gevent patches only queue.SimpleQueue.
        self._queue: _queue.SimpleQueue[Job | None] = _queue.SimpleQueue()
        self._lock = _lock()
        self._threads = 0
        self._waiting = 0  # jobs queued and not yet taken by a thread
        self._idle = 0  # threads blocked on the queue

    def submit(self, fn: Callable[[], Any]) -> Job:
        """Queue ``fn`` from a coroutine; the job's future is on the running loop."""
        job = Job(fn, asyncio.get_running_loop())
        with self._lock:
            self._waiting += 1
            # Grow while queued work outnumbers idle threads: jobs submitted together all
            # see the same idle threads, so comparing with zero would under-count.
            grow = self._waiting > self._idle and self._threads < self._size
            if grow:
                self._threads += 1
                number = self._threads
        self._queue.put(job)
        if grow:
            start_os_thread(self._work, (), name=f"{self._name}-worker-{number}")
        return job

    def _work(self) -> None:
        _pool_thread.pool = self
        while True:
            with self._lock:
                self._idle += 1
            job = self._queue.get()
            with self._lock:
                self._idle -= 1
                if job is not None:
                    self._waiting -= 1
            if job is None:
                return
            job.run()

    def shutdown(self) -> None:
        """Skip queued jobs and let each thread end after its current one."""
        with self._lock:
            threads = self._threads
        while True:
            try:
                job = self._queue.get_nowait()
            except _queue.Empty:
                break
            if job is not None:
                job.cancel()
        for _ in range(threads):
            self._queue.put(None)


class BridgeEventLoop(asyncio.SelectorEventLoop):
    """The bridge's loop: its default executor is the bridge's bounded pool."""

    def __init__(self, pool: ThreadPool, selector: Any = None) -> None:
        super().__init__(selector)
        self._bridge_pool = pool

    def run_in_executor(  # type: ignore[override]  # same call, our executor by default
        self, executor: Any, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        if executor is None:
            return self._bridge_pool.submit(functools.partial(func, *args)).future
        return super().run_in_executor(executor, func, *args)


def new_loop(pool: ThreadPool) -> BridgeEventLoop:
    """A loop for the bridge's thread; under gevent, with the unpatched selector."""
    selector = original("selectors", "DefaultSelector")() if gevent_patched() else None
    return BridgeEventLoop(pool, selector)


async def call_in_pool(pool: ThreadPool, fn: Callable[[], T], grace: float) -> T:
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
        raise


async def run_sync(pool: ThreadPool, fn: Callable[..., Any], arg: Any, grace: float) -> Any:
    """Run a plain callable in the pool, in a copy of the task's context.

    A plain function that returns an awaitable (``lambda d: client.create(...)``) has its
    awaitable awaited here, on the loop, so such lambdas work as users expect.
    """
    ctx = contextvars.copy_context()
    result = await call_in_pool(pool, functools.partial(ctx.run, fn, arg), grace)
    if inspect.isawaitable(result):
        return await result
    return result
