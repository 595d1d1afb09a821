"""Plain iterators fed by the bridge's loop: ``imap`` and ``iterate``."""

# Both submit through the bridge's Submitter, the one narrow way work reaches its loop.

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from ._calls import Call, cancel_all, wait_until
from ._tasks import as_coroutine
from ._waiters import new_notifier, new_one_shot

if TYPE_CHECKING:
    from ._submit import Submitter

__all__ = ["MAX_READ_AHEAD", "AsyncIteratorBridge", "CloseableIterator", "IMapIterator"]

#: The most input items ``imap`` holds at once (running, or finished and waiting for their
#: turn), whatever ``concurrency`` says: ``concurrency=10**9`` over an endless generator
#: would otherwise pull input for ever and never yield.
MAX_READ_AHEAD = 10_000

T = TypeVar("T")
A = TypeVar("A")

_END: Any = object()
T_co = TypeVar("T_co", covariant=True)


@runtime_checkable
class CloseableIterator(Iterator[T_co], Protocol):
    """What ``imap`` and ``iterate`` return: an iterator you can also ``close()`` early.

    ``close()`` cancels the work in flight (``imap``) or runs the async generator's
    ``aclose()`` (``iterate``), and waits for that clean-up, bounded by ``cancel_timeout``.
    """

    def close(self) -> None:
        """Stop early and clean up; later ``next()`` calls raise StopIteration."""


class IMapIterator(Iterator[T], Generic[A, T]):
    """Results of ``invoke(item)`` for items pulled lazily from ``items``.

    The caller's thread does the bookkeeping: it pulls input (so a user's generator never
    runs on the loop), starts calls while fewer than ``limit`` run, and sleeps until the
    loop reports one finished. Finished results that wait for their turn (``ordered``)
    are capped at ``limit`` too, and both together at :data:`MAX_READ_AHEAD`, so memory
    stays bounded whatever the input's length and whatever ``limit`` says.
    """

    def __init__(
        self,
        submitter: Submitter,
        invoke: Callable[[A], Awaitable[T]],
        items: Iterator[A],
        *,
        limit: int,
        ordered: bool,
        timeout: float | None,
        deadline: float | None = None,
        on_finished: Callable[[T], None] | None = None,
    ) -> None:
        self._submitter = submitter
        self._on_finished = on_finished
        self._invoke = invoke
        self._items = enumerate(items)
        self._limit = limit
        self._read_ahead = min(2 * limit, MAX_READ_AHEAD)
        self._ordered = ordered
        self._timeout = timeout
        self._deadline = deadline  # for the whole iteration: map(timeout=) through here
        self._ctx = contextvars.copy_context()
        self._notifier = new_notifier()
        self._owner_thread = threading.get_ident()
        self._finished: deque[Call[T]] = deque()
        self._running: dict[Call[T], int] = {}
        self._ready: dict[int, Call[T]] = {}
        self._next_index = 0
        self._exhausted = False
        self._closed = False

    def __iter__(self) -> IMapIterator[A, T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        try:
            return self._next_result()
        except BaseException:
            self.close()
            raise

    def _next_result(self) -> T:
        # One deadline per result: wake-ups for results that are not next must not extend it.
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        if self._deadline is not None:
            deadline = self._deadline if deadline is None else min(deadline, self._deadline)
        while True:
            self._collect()
            call = self._take_ready()
            # Refill first, so the freed slot works while the consumer handles this result.
            self._fill()
            if call is not None:
                return call.outcome(closing=self._submitter.closed)
            if not self._running and not self._finished:
                raise StopIteration
            self._wait_any(deadline)

    def _collect(self) -> None:
        while self._finished:
            call = self._finished.popleft()
            self._ready[self._running.pop(call)] = call
            # In completion order, before a result waits for its turn: a journal records
            # what was answered even while an earlier item still runs.
            if self._on_finished is not None and call.succeeded:
                self._on_finished(call.outcome(closing=False))

    def _take_ready(self) -> Call[T] | None:
        if not self._ordered:
            return self._ready.pop(next(iter(self._ready))) if self._ready else None
        call = self._ready.pop(self._next_index, None)
        if call is not None:
            self._next_index += 1
        return call

    def _fill(self) -> None:
        while (
            not self._exhausted
            and len(self._running) < self._limit
            and len(self._running) + len(self._ready) < self._read_ahead
        ):
            try:
                index, item = next(self._items)
            except StopIteration:
                self._exhausted = True
                return
            coro = as_coroutine(self._invoke(item))
            call = self._submitter.prepare(
                coro, self._ctx.copy(), self._notifier, self._finished, where="imap"
            )
            self._running[call] = index  # before submit(), so close() always finds it
            try:
                call.submit()
            except BaseException:
                if not call.submitted:
                    del self._running[call]
                raise

    def _wait_any(self, deadline: float | None) -> None:
        self._notifier.clear()
        # Checked after clear(): a result that lands in between still sets the notifier.
        if self._finished:
            return
        if not wait_until(self._notifier.wait, deadline, self._submitter.loop_alive):
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise TimeoutError(
                    "bridge.map() did not finish within its timeout; the calls in flight "
                    "were cancelled (raise the timeout, or lower the work per call)"
                )
            raise TimeoutError(
                f"bridge.imap() waited more than {self._timeout} s for the next result; "
                "the calls in flight were cancelled"
            )

    def close(self) -> None:
        """Cancel the calls in flight and wait (bounded) for them to finish cancelling."""
        if self._closed:
            return
        self._closed = True
        running = list(self._running)
        if running:
            cancel_all(running[0].loop, running)
            deadline = time.monotonic() + self._submitter.cancel_timeout
            while self._running and wait_until(self._notifier.wait, deadline, _always):
                self._notifier.clear()
                self._collect()
        self._notifier.close()

    def __del__(self) -> None:
        # Never block in a finaliser: ask the loop to cancel, and do not wait.
        if getattr(self, "_closed", True):
            return
        running = list(self._running)
        if running:
            cancel_all(running[0].loop, running)
        if threading.get_ident() == self._owner_thread:
            self._notifier.close()  # a gevent watcher may only be closed from its own hub


class AsyncIteratorBridge(Iterator[T]):
    """A plain iterator whose every step is one ``__anext__`` awaited on the bridge's loop."""

    def __init__(
        self, submitter: Submitter, iterator: AsyncIterator[T], timeout: float | None
    ) -> None:
        self._submitter = submitter
        self._iterator = iterator
        self._timeout = timeout
        # One context for every step, so the generator sees the same contextvars each time.
        self._ctx = contextvars.copy_context()
        self._done = False

    def __iter__(self) -> AsyncIteratorBridge[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        try:
            call = self._submitter.prepare(self._step(), self._ctx, new_one_shot(), where="iterate")
            item = self._submitter.wait(call, self._timeout, where="iterate")
        except BaseException:
            self.close()
            raise
        if item is _END:
            self._done = True
            raise StopIteration
        return item

    async def _step(self) -> T:
        try:
            return await anext(self._iterator)
        except StopAsyncIteration:
            return _END  # type: ignore[no-any-return]  # the sentinel travels as a value

    def close(self) -> None:
        """Run the async generator's ``aclose()`` on the loop and wait (bounded) for it."""
        if self._done:
            return
        self._done = True
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is None or self._submitter.closed:
            return
        call = self._submitter.prepare(aclose(), self._ctx, new_one_shot(), where="iterate")
        self._submitter.wait(call, self._submitter.cancel_timeout, where="iterate")

    def __del__(self) -> None:
        if getattr(self, "_done", True):
            return
        self._done = True
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            # Never block in a finaliser: schedule aclose() on the loop and move on.
            with contextlib.suppress(Exception):
                self._submitter.fire(aclose(), self._ctx)


def _always() -> bool:
    return True
