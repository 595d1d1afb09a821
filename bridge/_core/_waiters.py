"""How a waiting caller thread is woken from the loop thread.

A plain thread blocks on a lock, which is the cheapest cross-thread wake-up CPython has.
A gevent greenlet must not block its whole hub, so under gevent the loop thread wakes the
caller's hub through an ``async_`` watcher, the one gevent primitive documented as safe
to signal from another OS thread.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Protocol

from ._compat import gevent_patched

__all__ = ["NULL_NOTIFIER", "Notifier", "new_notifier", "new_one_shot"]


class Notifier(Protocol):
    def notify(self) -> None:
        """Wake the waiter; safe from any thread."""

    def wait(self, timeout: float | None) -> bool:
        """Block until notified or ``timeout`` seconds pass; True when notified."""

    def clear(self) -> None:
        """Forget earlier notifications, so that the next wait blocks until a new one."""

    def close(self) -> None:
        """Release what the notifier holds; it is not used again."""


class _ThreadNotifier:
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def notify(self) -> None:
        self._event.set()

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)

    def clear(self) -> None:
        self._event.clear()

    def close(self) -> None:
        pass


class _LockNotifier:
    """A notifier for exactly one notification: the cheapest wake-up there is."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def notify(self) -> None:
        self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        acquired = self._lock.acquire(True, -1 if timeout is None else timeout)
        if acquired:
            # Leave the lock released, so every later wait returns at once as well.
            self._lock.release()
        return acquired

    def clear(self) -> None:
        raise NotImplementedError("a one-shot notifier cannot be re-armed")

    def close(self) -> None:
        pass


class _GeventNotifier:
    __slots__ = ("_event", "_watcher")

    def __init__(self) -> None:
        import gevent  # noqa: PLC0415 - only under gevent
        import gevent.event  # noqa: PLC0415

        self._event: Any = gevent.event.Event()
        self._watcher: Any = gevent.get_hub().loop.async_()
        self._watcher.start(self._event.set)

    def notify(self) -> None:
        # A caller that gave up (timeout) may have closed the watcher already.
        with contextlib.suppress(Exception):
            self._watcher.send()

    def wait(self, timeout: float | None) -> bool:
        return bool(self._event.wait(timeout))

    def clear(self) -> None:
        self._event.clear()

    def close(self) -> None:
        self._watcher.close()


class _NullNotifier:
    """For a call nobody waits on (fire-and-forget clean-up)."""

    def notify(self) -> None:
        pass

    def wait(self, timeout: float | None) -> bool:
        return True

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass


NULL_NOTIFIER: Notifier = _NullNotifier()


def new_notifier() -> Notifier:
    if gevent_patched():
        return _GeventNotifier()
    return _ThreadNotifier()


def new_one_shot() -> Notifier:
    """A notifier that is notified at most once (one call's completion)."""
    if gevent_patched():
        return _GeventNotifier()
    return _LockNotifier()
