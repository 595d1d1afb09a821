"""What differs between Python versions and under gevent monkey-patching.

gevent's ``patch_all()`` turns ``threading.Thread`` into a greenlet and ``threading.Lock``
into a gevent lock. The bridge's loop must run on a real OS thread all the same, with a
real selector, so under gevent it is started through the unpatched originals.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

# Imported here, not when a thread starts: a request must not be what imports it.
from ._loglocks import share_handler_locks

__all__ = [
    "create_task",
    "gevent_patched",
    "original",
    "start_os_thread",
]

T = TypeVar("T")


def gevent_patched() -> bool:
    """True when gevent has monkey-patched ``threading`` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def original(module: str, name: str) -> Any:
    """The unpatched ``module.name`` from before gevent's monkey-patching."""
    from gevent import monkey  # noqa: PLC0415 - only reached when gevent is already imported

    return monkey.get_original(module, name)


def start_os_thread(
    target: Callable[..., object], args: tuple[Any, ...], *, name: str
) -> threading.Thread | None:
    """Start ``target(*args)`` on a real OS thread, daemonic, even under gevent.

    Returns the Thread to join, or None under gevent, where the thread is a raw one. Under
    gevent, logging handlers first get locks the new thread can share with greenlets.
    """
    if gevent_patched():
        from gevent._hub_local import get_hub_if_exists  # noqa: PLC0415 - gevent is loaded

        if get_hub_if_exists() is not None:  # the hub's thread, not one of the bridge's
            share_handler_locks()
        original("_thread", "start_new_thread")(target, args)
        return None
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


if sys.version_info >= (3, 11):

    def create_task(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, T],
        context: contextvars.Context,
    ) -> asyncio.Task[T]:
        return loop.create_task(coro, context=context)

else:

    def create_task(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, T],
        context: contextvars.Context,
    ) -> asyncio.Task[T]:
        # Before 3.11 a task copies the context current at its creation.
        return context.run(loop.create_task, coro)
