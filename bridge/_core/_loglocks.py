"""Logging handler locks that the bridge's OS threads and gevent's greenlets can share.

Under gevent's ``patch_all()`` a ``logging.Handler``'s lock is a gevent semaphore. The
bridge's loop and pool threads are real OS threads without a hub, and the SDKs log from
them (httpx's "HTTP Request: ..." line). When such a thread releases a handler lock that a
greenlet is waiting for, gevent can lose the cross-thread wake-up (gevent#2013): the
greenlet stays parked for ever on a free lock. A Celery gevent worker then never finishes
its warm shutdown, since its pool waits for that task's greenlet.

So, before the bridge starts an OS thread under gevent, each handler's lock is replaced by
:class:`SharedRLock`: a native lock that OS threads block on, and that greenlets poll,
yielding to their hub in between, so no wake-up has to cross threads. Handlers added after
the bridge started keep their gevent lock.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["SharedRLock", "share_handler_locks"]

#: How long a greenlet sleeps between two tries of a contended lock.
_POLL_SECONDS = 0.001


class SharedRLock:
    """A reentrant lock for OS threads and greenlets alike, built on a native lock."""

    def __init__(self) -> None:
        from gevent import monkey  # noqa: PLC0415 - only under gevent

        self._lock: Any = monkey.get_original("_thread", "allocate_lock")()
        self._owner: object = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        import gevent  # noqa: PLC0415 - only under gevent
        from gevent._hub_local import get_hub_if_exists  # noqa: PLC0415

        me = gevent.getcurrent()
        if self._owner is me:
            self._count += 1
            return True
        if get_hub_if_exists() is None or not blocking:
            # An OS thread without a hub (the bridge's) may block natively.
            acquired = bool(self._lock.acquire(blocking, timeout))
        else:
            acquired = self._poll(gevent, timeout)
        if acquired:
            self._owner, self._count = me, 1
        return acquired

    def _poll(self, gevent: Any, timeout: float) -> bool:
        waited = 0.0
        while not self._lock.acquire(False):
            if 0 <= timeout <= waited:
                return False
            gevent.sleep(_POLL_SECONDS)  # other greenlets, the holder among them, run
            waited += _POLL_SECONDS
        return True

    def release(self) -> None:
        import gevent  # noqa: PLC0415 - only under gevent

        if self._owner is not gevent.getcurrent():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count == 0:
            self._owner = None
            self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _at_fork_reinit(self) -> None:
        # logging re-initialises handler locks in a forked child (os.register_at_fork).
        self.__init__()  # type: ignore[misc]


def share_handler_locks() -> None:
    """Give every handler that loggers hold now a :class:`SharedRLock`, once each.

    Called from a greenlet in the hub's thread before the bridge's first OS thread starts;
    a lock held at that moment (by a greenlet that yielded inside ``emit``) is left alone,
    since its holder will release the lock it took.
    """
    loggers: list[Any] = [logging.getLogger()]
    loggers += [
        x for x in list(logging.Logger.manager.loggerDict.values()) if hasattr(x, "handlers")
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            old = handler.lock
            if (
                old is not None
                and not isinstance(old, SharedRLock)
                and not getattr(old, "_count", 0)
            ):
                handler.lock = SharedRLock()
