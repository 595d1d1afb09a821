"""The process-wide default bridge and the module-level functions that use it."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar, overload

from ._bridge import Bridge, make_sync

__all__ = [
    "default_loop",
    "gather",
    "get_default",
    "imap",
    "iterate",
    "map",
    "run",
    "set_default",
    "syncify",
    "to_thread",
]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

_default: Bridge | None = None
_default_lock = threading.Lock()


def get_default() -> Bridge:
    """The process-wide bridge that the module-level functions use, created on first use."""
    current = _default
    if current is not None:
        return current
    return _create_default()


def default_loop() -> asyncio.AbstractEventLoop:
    """The default bridge's loop, started on first use: where a bridge client sends a request
    made on a loop that is not a bridge's.

    Raises:
        BridgeClosedError: the default bridge is closed.
    """
    return get_default()._submit.open_loop()


def _create_default() -> Bridge:
    global _default  # noqa: PLW0603 - the process default is process-wide state by definition
    with _default_lock:
        if _default is None:
            _default = Bridge()
        return _default


def set_default(new: Bridge) -> Bridge | None:
    """Make ``new`` the process default and return the previous one (which stays open).

    Configure the default once at start-up, for example
    ``bridge.set_default(bridge.Bridge(concurrency=50, threads=64))``.
    """
    global _default
    if not isinstance(new, Bridge):
        raise TypeError(f"set_default() expects a bridge.Bridge, got {type(new).__name__}")
    with _default_lock:
        previous, _default = _default, new
    return previous


def _on_default(method: Callable[Concatenate[Bridge, P], R]) -> Callable[P, R]:
    """``method`` of the default bridge in force at each call, with its signature and docs.

    The signature (overloads included) is written once, on ``Bridge``; type checkers see
    the same overloads here, and ``help(bridge.map)`` the same parameters.
    """

    @functools.wraps(method)
    def on_default(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(get_default(), *args, **kwargs)

    signature = inspect.signature(method)
    on_default.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:]
    )
    del on_default.__wrapped__  # help() must show the signature above, not the method's
    first, _, body = (method.__doc__ or "").partition("\n\n")
    note = "        On the process default bridge (``bridge.get_default()``)."
    on_default.__doc__ = f"{first}\n\n{note}\n\n{body}"
    on_default.__module__ = __name__
    on_default.__qualname__ = method.__name__
    return on_default


run = _on_default(Bridge.run)
gather = _on_default(Bridge.gather)
map = _on_default(Bridge.map)
imap = _on_default(Bridge.imap)
iterate = _on_default(Bridge.iterate)
to_thread = _on_default(Bridge.to_thread)


@overload
def syncify(fn: Callable[P, Awaitable[T]], /) -> Callable[P, T]: ...


@overload
def syncify(
    *, timeout: float | None = None
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, T]]: ...


def syncify(
    fn: Callable[P, Awaitable[T]] | None = None, /, *, timeout: float | None = None
) -> Callable[P, T] | Callable[[Callable[P, Awaitable[T]]], Callable[P, T]]:
    """Decorate an ``async def`` function into a blocking one with the same signature.

    Works bare (``@bridge.syncify``) or with options (``@bridge.syncify(timeout=30)``).
    The call runs on the default bridge in force when it is made.

    Args:
        fn: an ``async def`` function (when used bare).
        timeout: seconds each call may take; it is cancelled after them.

    Raises:
        TypeError: ``fn`` is not an ``async def`` function.
    """
    if fn is None:
        return lambda f: make_sync(f, get_default, timeout)
    return make_sync(fn, get_default, timeout)
