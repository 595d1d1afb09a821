"""Thread-sensitive calls: a task's ``sync_to_async`` work runs back on the waiting caller.

Django keeps one database connection per thread, and a request's transaction lives on
its thread's connection. asgiref's ``sync_to_async(thread_sensitive=True)`` (behind the
async ORM: ``aget``, ``acreate``, ...) sends its function to the ``CurrentThreadExecutor``
it finds in ``AsyncToSync.executors.current``, a context-local; ``async_to_sync`` puts
one there, and while it waits it runs that executor's work on its own thread.

A thread-sensitive bridge does the same for each call: the caller makes a
:class:`CallerThreadExecutor`, the call's task installs it on the loop thread, and the
caller's wait (``Notifier.wait``) runs the queued work until the task finishes. The
executor is the call's completion notifier too, so the bridge's timeout, Ctrl-C and
settle logic are unchanged: they simply wait through it.

asgiref is imported only here, and this module only when a bridge is made with
``thread_sensitive=True``.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asgiref.local
from asgiref.current_thread_executor import CurrentThreadExecutor
from asgiref.sync import AsyncToSync

from ._waiters import Notifier

__all__ = ["CallerThreadExecutor", "attach", "check_supported"]

T = TypeVar("T")

# Recent asgiref tags Local storage with its thread, and re-homes it where it moves work
# between threads; older versions keep Local in a plain contextvar, visible as it is.
_Storage: type[Any] | None = getattr(asgiref.local, "_Storage", None)
_rehome: Callable[[Any], Any] | None = getattr(asgiref.local, "_rehome", None)


class CallerThreadExecutor(CurrentThreadExecutor):
    """asgiref's executor for the calling thread, drained in bounded waits.

    ``CurrentThreadExecutor.run_until_future`` blocks without a timeout; the bridge needs
    its deadline, its liveness checks and Ctrl-C, so this class keeps asgiref's queue and
    ``submit`` (nested ``async_to_sync`` walks them) and replaces only the waiting side.
    It also implements the bridge's ``Notifier`` protocol: ``notify`` marks the call done.
    """

    def __init__(self, old_executor: CurrentThreadExecutor | None) -> None:
        super().__init__(old_executor)
        self._call_done = False

    def notify(self) -> None:
        """On the loop thread: the call finished; wake the caller."""
        with self._work_ready:
            self._call_done = True
            self._work_ready.notify()

    def wait(self, timeout: float | None) -> bool:
        """Run queued work on this thread until the call is done or ``timeout`` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (item := self._next_item(deadline)) is not None:
            item.run()
            del item  # drop the result or exception before waiting again
        return self._call_done

    def _next_item(self, deadline: float | None) -> Any:
        with self._work_ready:
            while not self._work_items and not self._call_done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._work_ready.wait(remaining)
            if self._work_items:
                return self._work_items.popleft()
            # Done and drained, as run_until_future ends: later work goes to an outer
            # executor, or fails at once, instead of waiting for a caller that has left.
            self._broken = True
            return None

    def clear(self) -> None:
        raise NotImplementedError("a call's executor is notified once; it cannot be re-armed")

    def close(self) -> None:
        """Refuse new work and cancel work nobody will run (the caller has given up)."""
        with self._work_ready:
            self._broken = True
            stranded = list(self._work_items)
            self._work_items.clear()
        for item in stranded:
            item.future.cancel()


def check_supported() -> None:
    """Raise RuntimeError if the installed asgiref lacks the executor internals used here."""
    probe = CurrentThreadExecutor(None)
    if not all(hasattr(probe, name) for name in ("_work_ready", "_work_items", "_broken")):
        raise RuntimeError(
            "Bridge(thread_sensitive=True) needs asgiref >= 3.8 (the version Django 5.1+ "
            "installs); upgrade it with `pip install -U asgiref`"
        )


def attach(
    coro: Coroutine[Any, Any, T],
    on_discard: Callable[[], None] | None,
) -> tuple[Coroutine[Any, Any, T], Notifier, Callable[[], None]]:
    """Make a call thread-sensitive; on the caller's thread, before it is submitted.

    Returns the coroutine to run instead (it installs the executor first), the executor
    that is also the call's notifier, and the discard hook that closes ``coro`` should
    the wrapper never run.
    """
    # Nested in async_to_sync or in another bridged call: that executor is the fallback.
    outer = getattr(AsyncToSync.executors, "current", None)
    executor = CallerThreadExecutor(outer)

    async def on_loop() -> T:
        _rehome_locals()
        AsyncToSync.executors.current = executor
        return await coro

    def discard() -> None:
        coro.close()
        if on_discard is not None:
            on_discard()

    return on_loop(), executor, discard


def _rehome_locals() -> None:
    """Make the caller's asgiref ``Local`` values visible in this task, as async_to_sync does.

    The task's context is a copy of the caller's, but asgiref hides Local storage that a
    thread inherited rather than was handed on purpose (Django's active translation, URL
    prefix...). Thread-critical Locals, such as Django's connections, are not affected.
    """
    if _Storage is None or _rehome is None:
        return
    for var, value in contextvars.copy_context().items():
        if isinstance(value, _Storage) and value.thread_id != threading.get_ident():
            var.set(_rehome(value))
