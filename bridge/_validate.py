"""Argument checks whose messages say what to do instead."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable
from typing import Any

__all__ = [
    "check_awaitable",
    "check_concurrency",
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
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"timeout must be a number of seconds or None, got {value!r}")
    if value <= 0:
        raise ValueError(f"timeout must be more than 0 seconds (or None for no limit), got {value}")
    return float(value)
