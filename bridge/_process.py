"""Process-wide state: what lives once per process, and what happens to it at fork, when a
bridge's loop closes, and at exit, in one place and in one explicit order.

The registries, each owned (and typed) by one module:

- ``bridge._core._runner``: every live loop runner, weakly (for exit, fork, and
  ``is_bridge_loop``);
- ``bridge._core._default``: the process default bridge;
- ``bridge._admission._controller``: one admission controller per endpoint;
- ``bridge._admission._transport``: one HTTP pool per bridge loop, the sync pool, and the
  request-to-controller cache;
- ``bridge._admission._hop``: the requests from other loops in flight on each bridge loop,
  and their open streams;
- ``bridge._admission._redis``: every Redis store, with a client per loop.

Those modules register what must happen to their state under a named stage here, and the
stages run in the order written below, whatever order the modules were imported in. So
"which hook runs first" is read here, not worked out from import order.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

__all__ = [
    "EXIT_STAGES",
    "FORK_STAGES",
    "LOOP_CLOSE_STAGES",
    "at_exit",
    "close_loop",
    "endpoint_stats",
    "on_fork",
    "on_loop_close",
    "set_stats_source",
]

logger = logging.getLogger(__name__)

#: In a forked child, in this order: the parent's loop threads and thread pools are gone,
#: so bridges forget them first (without touching them); then admission starts from
#: scratch (its waiters and locks were the parent's); then the HTTP pools and the cache that
#: points at the old controllers are dropped, untouched (their sockets are the parent's).
FORK_STAGES: Final = ("loops", "controllers", "pools")
#: On a bridge's loop, after its tasks are cancelled and before it stops: requests from
#: other loops first (their callers are told, their streams closed), then HTTP pools
#: (their requests may still hold store reservations), then Redis clients.
LOOP_CLOSE_STAGES: Final = ("hops", "pools", "stores")
#: At interpreter exit: every open bridge closes (its loop closes its pools and stores),
#: then what belongs to no loop (the sync HTTP pool).
EXIT_STAGES: Final = ("bridges", "pools")

_fork: dict[str, list[Callable[[], None]]] = {stage: [] for stage in FORK_STAGES}
_loop_close: dict[str, list[Callable[[asyncio.AbstractEventLoop], Awaitable[None]]]] = {
    stage: [] for stage in LOOP_CLOSE_STAGES
}
_exit: dict[str, list[Callable[[], None]]] = {stage: [] for stage in EXIT_STAGES}
_stats_source: list[Callable[[], Mapping[str, Any]]] = []


def on_fork(stage: str, hook: Callable[[], None]) -> None:
    """Run ``hook()`` in every forked child, in the order of :data:`FORK_STAGES`."""
    _fork[stage].append(hook)


def on_loop_close(stage: str, hook: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    """Have ``await hook(loop)`` run on every bridge loop just before it stops."""
    _loop_close[stage].append(hook)


def at_exit(stage: str, hook: Callable[[], None]) -> None:
    """Run ``hook()`` at interpreter exit, in the order of :data:`EXIT_STAGES`."""
    _exit[stage].append(hook)


async def close_loop(loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    """Run the loop-close hooks, each bounded by ``timeout``; a failure is logged."""
    for stage in LOOP_CLOSE_STAGES:
        for hook in _loop_close[stage]:
            try:
                await asyncio.wait_for(hook(loop), timeout)
            except Exception:
                logger.exception("closing %s at bridge shutdown failed", stage)


def set_stats_source(source: Callable[[], Mapping[str, Any]]) -> None:
    """Where ``endpoint_stats`` reads from: admission control, once it is loaded."""
    _stats_source[:] = [source]


def endpoint_stats() -> Mapping[str, Any]:
    """Every endpoint's counters (``bridge.stats()``), or nothing if admission never loaded.

    The loop layer (a progress bar) reads them through here, so it never imports the
    admission layer above it.
    """
    return _stats_source[0]() if _stats_source else {}


def _after_fork_in_child() -> None:
    for stage in FORK_STAGES:
        for hook in _fork[stage]:
            hook()


@atexit.register
def _at_exit() -> None:
    for stage in EXIT_STAGES:
        for hook in _exit[stage]:
            hook()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
