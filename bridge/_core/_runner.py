"""The loop thread: one event loop running forever in a daemon thread, plus a bounded pool.

Both start lazily on first use. After ``os.fork()`` the child forgets the parent's loop,
thread and pool without touching them (their file descriptors and threads belong to the
parent) and starts fresh ones on first use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import warnings
import weakref

from .. import _process
from .._errors import BridgeClosedError, BridgeWarning, ReentrancyError
from ._compat import start_os_thread
from ._threads import ThreadPool, new_loop

__all__ = ["LoopRunner", "is_bridge_loop"]

logger = logging.getLogger(__name__)

_live_runners: weakref.WeakSet[LoopRunner] = weakref.WeakSet()
# Objects inherited from the parent across a fork. Closing them in the child would act on
# the parent's file descriptors, and letting them be garbage-collected makes asyncio warn
# about an unclosed loop, so the child keeps them, untouched, until it exits.
_abandoned: list[object] = []


def is_bridge_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """True if ``loop`` is the running loop of a live bridge in this process."""
    pid = os.getpid()
    return any(r._loop is loop and r._pid == pid for r in list(_live_runners))


class LoopRunner:
    """Owns one event loop thread and one thread pool, both started on first use."""

    def __init__(self, *, threads: int, name: str, close_timeout: float) -> None:
        self._threads = threads
        self._name = name
        self.close_timeout = close_timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None
        self._finished: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPool | None = None
        self._pid = os.getpid()
        self.closing = False
        _live_runners.add(self)

    # -- state -------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._loop is not None and self._pid == os.getpid()

    def in_loop_thread(self) -> bool:
        return self._thread_id == threading.get_ident()

    def loop_alive(self) -> bool:
        finished = self._finished
        return finished is not None and not finished.is_set()

    # -- lazy start --------------------------------------------------------------------

    def loop(self) -> asyncio.AbstractEventLoop:
        """Return the running loop, starting it on first use (the hot path is two reads)."""
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        return self._start_loop()

    def pool(self) -> ThreadPool:
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            self._check_usable()
            if self._pool is None:
                self._pool = ThreadPool(self._threads, self._name)
            return self._pool

    def _check_usable(self) -> None:
        if self._pid != os.getpid():
            self._forget()
        if self.closing:
            raise BridgeClosedError(
                f"{self._name} is closed; create a new bridge.Bridge() "
                "(or bridge.set_default(bridge.Bridge()) for the process default)"
            )

    def _start_loop(self) -> asyncio.AbstractEventLoop:
        pool = self.pool()
        with self._lock:
            self._check_usable()
            if self._loop is None:
                self._loop = self._spawn(pool)
            return self._loop

    def _spawn(self, pool: ThreadPool) -> asyncio.AbstractEventLoop:
        loop = new_loop(pool)
        started = threading.Event()
        finished = threading.Event()
        thread = start_os_thread(self._serve, (loop, started, finished), name=f"{self._name}-loop")
        started.wait()
        self._finished = finished
        self._thread = thread
        return loop

    def _serve(
        self, loop: asyncio.AbstractEventLoop, started: threading.Event, finished: threading.Event
    ) -> None:
        self._thread_id = threading.get_ident()
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        try:
            while not self.closing:
                try:
                    loop.run_forever()
                except (KeyboardInterrupt, SystemExit):
                    # A task that raises these escapes run_forever; the loop must outlive
                    # it, or every later call in the process would fail.
                    logger.exception("a task raised through the bridge's event loop")
        finally:
            # Thread idents are reused: a stale one would mark an unrelated thread as ours.
            self._thread_id = None
            finished.set()

    # -- fork ----------------------------------------------------------------------------

    def _forget(self) -> None:
        """Drop the parent's loop, thread and pool in a forked child, without touching them."""
        _abandoned.extend(x for x in (self._loop, self._pool) if x is not None)
        self._lock = threading.Lock()
        self._loop = None
        self._thread_id = None
        self._finished = None
        self._thread = None
        self._pool = None
        self._pid = os.getpid()

    # -- close ---------------------------------------------------------------------------

    def close(self, timeout: float) -> None:
        """Cancel what is left, close async generators, stop the loop and the pool."""
        if self.in_loop_thread():
            raise ReentrancyError(
                "Bridge.close() was called from the bridge's own event loop; "
                "call it from ordinary synchronous code instead"
            )
        with self._lock:
            if self._pid != os.getpid():
                self._forget()
            if self.closing:
                return
            self.closing = True
            loop, finished, pool = self._loop, self._finished, self._pool
        if loop is not None and finished is not None:
            self._stop_loop(loop, finished, timeout)
        if pool is not None:
            pool.shutdown()

    def _stop_loop(
        self, loop: asyncio.AbstractEventLoop, finished: threading.Event, timeout: float
    ) -> None:
        loop.call_soon_threadsafe(_start_drain, loop, timeout)
        # The drain itself is bounded by timeout; the extra second covers its own bookkeeping.
        if not finished.wait(timeout + 1.0):
            warnings.warn(
                f"{self._name}: the event loop did not stop within {timeout} s; "
                "a task is blocking it (a synchronous call inside a coroutine?)",
                BridgeWarning,
                stacklevel=4,
            )
            return
        if self._thread is not None:
            self._thread.join(timeout)
        loop.close()


def _start_drain(loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    loop.create_task(_drain(loop, timeout))


async def _drain(loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    deadline = loop.time() + timeout
    # Repeat: a task's clean-up may start new tasks, and those must not outlive the loop.
    while tasks := [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]:
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
        if pending:
            logger.warning("%d task(s) ignored cancellation at bridge shutdown", len(pending))
            break
    await _process.close_loop(loop, timeout)  # the clients made for this loop
    await loop.shutdown_asyncgens()
    loop.stop()


def _close_all() -> None:
    """At exit, close every bridge still open: the default and any the user made."""
    for runner in list(_live_runners):
        runner.close(runner.close_timeout)


def _after_fork_in_child() -> None:
    for runner in list(_live_runners):
        runner._forget()


_process.at_exit("bridges", _close_all)
_process.on_fork("loops", _after_fork_in_child)
