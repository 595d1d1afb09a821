"""The window of requests in flight: slots handed over in order, to any thread or loop.

Interactive waiters are served before batch ones; each lane is first come, first served.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable

__all__ = ["Gate"]

_WAITING, _GRANTED, _CANCELLED = 0, 1, 2


class Gate:
    """Concurrency slots, handed over to sync or async waiters, interactive ones first."""

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self.limit = limit
        self.active = 0
        self._lines: dict[str, deque[_Waiter]] = {"interactive": deque(), "batch": deque()}

    def enter_or_wait(
        self, notify: Callable[[], None], lane: str = "interactive"
    ) -> _Waiter | None:
        """Take a slot now (None), or queue a waiter that ``notify`` wakes when granted."""
        with self._lock:
            if self.active < self.limit and not any(self._lines.values()):
                self.active += 1
                return None
            waiter = _Waiter(notify)
            self._lines[lane].append(waiter)
            return waiter

    def leave(self) -> None:
        with self._lock:
            self.active -= 1
            self._grant()

    def abandon(self, waiter: _Waiter) -> None:
        """A waiter gave up (cancelled): return its slot if it was granted one meanwhile."""
        with self._lock:
            if waiter.state == _GRANTED:
                self.active -= 1
                self._grant()
            waiter.state = _CANCELLED

    def set_limit(self, limit: int) -> None:
        with self._lock:
            self.limit = limit
            self._grant()

    def _grant(self) -> None:
        while self.active < self.limit:
            line = self._lines["interactive"] or self._lines["batch"]
            if not line:
                return
            waiter = line.popleft()
            if waiter.state == _WAITING:
                waiter.state = _GRANTED
                self.active += 1
                try:
                    waiter.notify()
                except RuntimeError:
                    # Its loop was closed without cancelling it: the slot goes to the next.
                    waiter.state = _CANCELLED
                    self.active -= 1

    async def enter_async(self, timeout: float | None = None, lane: str = "interactive") -> bool:
        """Take a slot, waiting in ``lane``'s line; False if ``timeout`` seconds passed first."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(_resolve, future)

        waiter = self.enter_or_wait(wake, lane)
        if waiter is None:
            return True
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self.abandon(waiter)  # a slot granted at the last moment goes to the next
            return False
        except BaseException:
            self.abandon(waiter)
            raise
        return True

    def enter_sync(self, timeout: float | None = None, lane: str = "interactive") -> bool:
        """The blocking twin of :meth:`enter_async`."""
        event = threading.Event()
        waiter = self.enter_or_wait(event.set, lane)
        if waiter is None or event.wait(timeout):
            return True
        self.abandon(waiter)
        return False

    @property
    def waiting(self) -> int:
        """Requests in line for a slot."""
        return sum(1 for line in self._lines.values() for w in line if w.state == _WAITING)


class _Waiter:
    __slots__ = ("notify", "state")

    def __init__(self, notify: Callable[[], None]) -> None:
        self.notify = notify
        self.state = _WAITING


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
