"""One coroutine handed from a caller thread to the loop thread, and its way back.

``loop.call_soon_threadsafe`` is the only door into a running loop from another thread,
so a call crosses it once to start its task and once more only if it must be cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Generic, Protocol, TypeVar

from .._errors import BridgeClosedError, surfaced
from ._compat import create_task
from ._waiters import Notifier

__all__ = ["Call", "Owner", "cancel_all", "wait_until"]

T = TypeVar("T")

logger = logging.getLogger(__name__)

# How often a caller with nothing to do checks that the loop thread is still alive.
_LIVENESS_INTERVAL = 1.0


class Owner(Protocol):
    """What a call needs to know of its bridge: whether it is closing."""

    closing: bool


class Call(Generic[T]):
    """A coroutine running as a task on the bridge's loop, awaited from another thread."""

    __slots__ = (
        "_coro",
        "_ctx",
        "_done",
        "_error",
        "_finished",
        "_loop",
        "_notified",
        "_on_discard",
        "_owner",
        "_result",
        "_running",
        "_task",
        "submitted",
    )

    def __init__(
        self,
        owner: Owner,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, T],
        ctx: contextvars.Context,
        done: Notifier,
        *,
        finished: deque[Call[T]] | None = None,
        on_discard: Callable[[], None] | None = None,
    ) -> None:
        self._owner = owner
        self._loop = loop
        self._coro = coro
        self._ctx = ctx
        self._done = done
        self._finished = finished
        self._on_discard = on_discard
        self._task: asyncio.Task[None] | None = None
        self._result: T | None = None
        self._error: BaseException | None = None
        self._notified = False
        self._running = False
        self.submitted = False

    def submit(self) -> Call[T]:
        # Set first: a Ctrl-C landing right after the hand-over must still find the call.
        self.submitted = True
        try:
            self._loop.call_soon_threadsafe(self._start)
        except RuntimeError:  # the loop was closed under us
            self.submitted = False
            self.discard()
            raise BridgeClosedError("the bridge was closed; create a new bridge.Bridge()") from None
        return self

    def discard(self) -> None:
        """Close the coroutine that will never run, and whatever it was to await."""
        self._coro.close()
        if self._on_discard is not None:
            self._on_discard()

    # -- on the loop thread -----------------------------------------------------------

    def _start(self) -> None:
        if self._owner.closing:
            # close() has begun: a task started now would outlive the loop's last drain.
            self.discard()
            self._error = BridgeClosedError("the bridge was closed while this call was queued")
            self._notify()
            return
        self._task = create_task(self._loop, self._drive(), self._ctx)

    async def _drive(self) -> None:
        # Recording the outcome inside the task's last step, rather than in a done-callback,
        # wakes the caller one loop iteration sooner and leaves the loop less to do while
        # the caller wants the GIL back.
        self._running = True
        try:
            self._result = await self._coro
        except asyncio.CancelledError as exc:
            self._error = exc
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
            self._error = exc
        finally:
            self._notify()

    def _notify(self) -> None:
        if self._notified:
            return
        self._notified = True
        if self._finished is not None:
            self._finished.append(self)
        self._done.notify()

    # -- on the caller's thread -------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)

    def release(self) -> None:
        """Free the completion notifier; only for a caller that owns it alone."""
        self._done.close()

    def cancel(self) -> None:
        """Ask the loop to cancel the task; safe from any thread."""
        cancel_all(self._loop, (self,))

    @property
    def succeeded(self) -> bool:
        """Whether the call finished and returned (no exception, not cancelled)."""
        return self._notified and self._error is None

    def outcome(self, *, closing: bool) -> T:
        """The coroutine's result, or its exception re-raised with the coroutine's frames."""
        if not self._notified:
            raise RuntimeError("Call.outcome() read before the call finished")  # a bridge bug
        error = self._error
        if error is None:
            return self._result  # type: ignore[return-value]  # set whenever error is None
        if isinstance(error, asyncio.CancelledError):
            if closing:
                raise BridgeClosedError("the bridge was closed while this call was running")
            raise concurrent.futures.CancelledError(
                "the coroutine was cancelled on the bridge's loop"
            )
        try:
            raise surfaced(error)
        finally:
            del error  # break the frame <-> traceback cycle, as concurrent.futures does

    def _cancel_task(self) -> None:
        if self._task is None or self._task.done():
            return
        self._task.cancel()
        if not self._running:
            # A task cancelled before its first step never enters _drive: report it here.
            self.discard()
            self._error = asyncio.CancelledError()
            self._notify()


def cancel_all(loop: asyncio.AbstractEventLoop, calls: Iterable[Call[Any]]) -> None:
    """Cancel many calls with one crossing into the loop."""
    # A closed loop raises RuntimeError: its tasks were cancelled when it was drained.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_cancel_tasks, tuple(calls))


def _cancel_tasks(calls: tuple[Call[Any], ...]) -> None:
    for call in calls:
        call._cancel_task()


def wait_until(
    wait: Callable[[float | None], bool], deadline: float | None, loop_alive: Callable[[], bool]
) -> bool:
    """Wait for ``wait`` to succeed before ``deadline``; False when the deadline passes.

    Raises BridgeClosedError if the loop thread stops meanwhile, instead of hanging.
    """
    while True:
        remaining = _LIVENESS_INTERVAL if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            return False
        if wait(min(remaining, _LIVENESS_INTERVAL)):
            return True
        if not loop_alive():
            raise BridgeClosedError("the bridge's event loop stopped; create a new bridge.Bridge()")
