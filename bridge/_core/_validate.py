"""Argument checks whose messages say what to do instead."""

from __future__ import annotations

import functools
import inspect
import math
import threading
from collections.abc import Awaitable
from typing import Any

__all__ = [
    "check_awaitable",
    "check_concurrency",
    "check_grace",
    "check_timeout",
    "describe",
    "is_async_callable",
]


def describe(obj: object) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return f"{type(obj).__name__} {name!r}" if name else f"an object of type {type(obj).__name__}"


def is_async_callable(fn: object) -> bool:
    """True for ``async def`` functions, partials of them and objects with ``async __call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - we want the async-ness of __call__ itself
    )


def check_awaitable(obj: object, where: str) -> Awaitable[Any]:
    if inspect.isawaitable(obj):
        return obj
    if is_async_callable(obj) or inspect.isasyncgenfunction(obj):
        raise TypeError(
            f"{where}() got the function {describe(obj)} itself, not an awaitable; "
            f"call it first: {where}(fn(...)) rather than {where}(fn)"
        )
    raise TypeError(
        f"{where}() expects an awaitable (a coroutine, Task or Future), got {describe(obj)}; "
        "to run a plain function, use bridge.map(fn, items) or call it directly"
    )


def check_concurrency(value: object, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"concurrency must be a whole number of tasks, got {value!r}")
    if value < 1:
        raise ValueError(
            f"concurrency must be at least 1, got {value}; "
            "it caps how many tasks run at once (pass None for the bridge's default)"
        )
    return value


def check_timeout(value: object) -> float | None:
    """A call's ``timeout``: seconds above 0, or None (``inf`` also means no limit)."""
    if value is None:
        return None
    seconds = _seconds(value, "timeout")
    if seconds == math.inf:
        return None
    if seconds <= 0:
        raise ValueError(
            f"timeout must be more than 0 seconds (or None for no limit), got {seconds}"
        )
    return seconds


def check_grace(value: object, name: str) -> float | None:
    """``cancel_timeout`` or ``close(timeout=)``: finite seconds above 0, or None (the default).

    A clean-up wait must end, so unlike a call's ``timeout`` it has no "no limit" value.
    """
    if value is None:
        return None
    seconds = _seconds(value, name)
    # Half the most a lock may wait (about 146 years): waits add their own margin to it.
    if not 0 < seconds <= threading.TIMEOUT_MAX / 2:
        raise ValueError(
            f"{name} must be a finite number of seconds above 0, got {seconds}; "
            "it bounds how long clean-up may take (pass None for the default)"
        )
    return seconds


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float: as good as infinite
        seconds = math.inf if value > 0 else -math.inf
    if math.isnan(seconds):
        raise ValueError(f"{name} is NaN; pass a number of seconds above 0, or None")
    return seconds
