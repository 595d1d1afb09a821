"""The process-wide default bridge and the module-level functions that use it."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any, Literal, ParamSpec, TypeVar, overload

from ._bridge import Bridge, make_sync
from ._iterators import CloseableIterator
from ._progress import Progress

__all__ = [
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
A = TypeVar("A")
P = ParamSpec("P")

_default: Bridge | None = None
_default_lock = threading.Lock()


def get_default() -> Bridge:
    """The process-wide bridge that the module-level functions use, created on first use."""
    current = _default
    if current is not None:
        return current
    return _create_default()


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


def run(awaitable: Awaitable[T], *, timeout: float | None = None) -> T:
    """Run one awaitable on the default bridge's loop and return its result."""
    return get_default().run(awaitable, timeout=timeout)


def gather(
    *awaitables: Awaitable[T],
    concurrency: int | None = None,
    timeout: float | None = None,
    return_exceptions: bool = False,
) -> list[Any]:
    """Await many awaitables, at most ``concurrency`` at once; results in input order."""
    return get_default().gather(
        *awaitables,
        concurrency=concurrency,
        timeout=timeout,
        return_exceptions=return_exceptions,
    )


@overload
def map(
    fn: Callable[[A], Awaitable[T]],
    iterable: Iterable[A],
    *,
    concurrency: int | None = ...,
    timeout: float | None = ...,
    journal: str | os.PathLike[str] | None = ...,
    key: Callable[[A], str] | None = ...,
    retry_failed: bool = ...,
    progress: Progress = ...,
    return_exceptions: Literal[False] = ...,
) -> list[T]: ...


@overload
def map(
    fn: Callable[[A], T],
    iterable: Iterable[A],
    *,
    concurrency: int | None = ...,
    timeout: float | None = ...,
    journal: str | os.PathLike[str] | None = ...,
    key: Callable[[A], str] | None = ...,
    retry_failed: bool = ...,
    progress: Progress = ...,
    return_exceptions: Literal[False] = ...,
) -> list[T]: ...


@overload
def map(
    fn: Callable[[A], Any],
    iterable: Iterable[A],
    *,
    concurrency: int | None = ...,
    timeout: float | None = ...,
    journal: str | os.PathLike[str] | None = ...,
    key: Callable[[A], str] | None = ...,
    retry_failed: bool = ...,
    progress: Progress = ...,
    return_exceptions: bool,
) -> list[Any]: ...


def map(
    fn: Callable[[A], Any],
    iterable: Iterable[A],
    *,
    concurrency: int | None = None,
    timeout: float | None = None,
    journal: str | os.PathLike[str] | None = None,
    key: Callable[[A], str] | None = None,
    retry_failed: bool = False,
    progress: Progress = False,
    return_exceptions: bool = False,
) -> list[Any]:
    """Call ``fn`` on every item, at most ``concurrency`` at once; results in input order."""
    return get_default().map(
        fn,
        iterable,
        concurrency=concurrency,
        timeout=timeout,
        return_exceptions=return_exceptions,
        journal=journal,
        key=key,
        retry_failed=retry_failed,
        progress=progress,
    )


@overload
def imap(
    fn: Callable[[A], Awaitable[T]],
    iterable: Iterable[A],
    *,
    concurrency: int | None = ...,
    ordered: bool = ...,
    timeout: float | None = ...,
    journal: str | os.PathLike[str] | None = ...,
    key: Callable[[A], str] | None = ...,
    retry_failed: bool = ...,
    progress: Progress = ...,
) -> CloseableIterator[T]: ...


@overload
def imap(
    fn: Callable[[A], T],
    iterable: Iterable[A],
    *,
    concurrency: int | None = ...,
    ordered: bool = ...,
    timeout: float | None = ...,
    journal: str | os.PathLike[str] | None = ...,
    key: Callable[[A], str] | None = ...,
    retry_failed: bool = ...,
    progress: Progress = ...,
) -> CloseableIterator[T]: ...


def imap(
    fn: Callable[[A], Any],
    iterable: Iterable[A],
    *,
    concurrency: int | None = None,
    ordered: bool = True,
    timeout: float | None = None,
    journal: str | os.PathLike[str] | None = None,
    key: Callable[[A], str] | None = None,
    retry_failed: bool = False,
    progress: Progress = False,
) -> CloseableIterator[Any]:
    """Yield ``fn(item)`` results as they finish, pulling ``iterable`` lazily."""
    return get_default().imap(
        fn,
        iterable,
        concurrency=concurrency,
        ordered=ordered,
        timeout=timeout,
        journal=journal,
        key=key,
        retry_failed=retry_failed,
        progress=progress,
    )


def iterate(
    async_iterable: AsyncIterable[T], *, timeout: float | None = None
) -> CloseableIterator[T]:
    """A plain iterator over an async iterable, driven by the default bridge's loop."""
    return get_default().iterate(async_iterable, timeout=timeout)


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


async def to_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """From async code, run a blocking call in the default bridge's bounded thread pool."""
    return await get_default().to_thread(fn, *args, **kwargs)


def _document(function: Callable[..., Any], method: Callable[..., Any]) -> None:
    """Give ``function`` the parameter sections of the ``Bridge`` method it delegates to.

    One text to maintain; ``help(bridge.map)`` shows every parameter, on the default bridge.
    """
    first = (function.__doc__ or "").strip().splitlines()[0]
    _, _, body = (method.__doc__ or "").partition("\n\n")
    function.__doc__ = (
        f"{first}\n\n        On the process default bridge (``bridge.get_default()``).\n\n{body}"
    )


for _function, _method in (
    (run, Bridge.run),
    (gather, Bridge.gather),
    (map, Bridge.map),
    (imap, Bridge.imap),
    (iterate, Bridge.iterate),
    (to_thread, Bridge.to_thread),
):
    _document(_function, _method)
