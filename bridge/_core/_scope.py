"""Who is waiting, and for how long they can: ``bridge.deadline()`` and ``bridge.priority()``.

Both are context variables, so they follow a request through everything it does: every
bridge call copies the caller's context into the loop, where admission control reads
them. A deadline nests (the inner one can only be earlier); a lane is the innermost one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Final, Literal

__all__ = [
    "LANES",
    "Lane",
    "current_lane",
    "deadline",
    "deadline_at",
    "default_lane",
    "priority",
    "set_process_lane",
    "time_left",
]

#: The lanes: ``"interactive"`` (a person waits: views, the default) is admitted before
#: ``"batch"`` (nobody waits on one item: batch commands, workers, journaled runs).
Lane = Literal["interactive", "batch"]
LANES: Final = ("interactive", "batch")

_deadline: ContextVar[float | None] = ContextVar("bridge_deadline", default=None)
_lane: ContextVar[Lane | None] = ContextVar("bridge_lane", default=None)
# The lane of calls made outside any priority(): interactive, except in processes that
# exist to run batch work (a Celery worker sets batch when its bridge starts).
_process_lane: Lane = "interactive"


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound every bridge call made inside: they must finish within ``seconds`` from now.

    A call whose admission would wait past the deadline fails at once, without sending,
    with :class:`bridge.DeadlineExceeded`, which says how long it would have waited and
    why; an HTTP request's timeout is cut to the time left; retries stop before their
    wait crosses it. Nested deadlines keep the earlier one.

    Raises:
        ValueError: ``seconds`` is not a positive, finite number.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"deadline() takes seconds as a number, got {type(seconds).__name__}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"deadline() takes a positive, finite number of seconds; got {seconds!r}")
    at = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _deadline.reset(token)


@contextlib.contextmanager
def priority(lane: Lane) -> Iterator[None]:
    """Run the bridge calls made inside in ``lane``: ``"interactive"`` or ``"batch"``.

    Interactive waiters are admitted before batch ones, and, with a shared store, batch
    traffic yields a share of the quota while interactive demand is present (see
    ``Limits(reserve_interactive=...)``). Everything is interactive unless told.

    Raises:
        ValueError: an unknown lane.
    """
    if lane not in LANES:
        raise ValueError(f"priority() takes 'interactive' or 'batch', got {lane!r}")
    token = _lane.set(lane)
    try:
        yield
    finally:
        _lane.reset(token)


def deadline_at() -> float | None:
    """The deadline in force (``time.monotonic()`` seconds), or None."""
    return _deadline.get()


def time_left() -> float | None:
    """Seconds left before the deadline in force (0 or less when passed), or None."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


def current_lane() -> Lane:
    """The lane in force: the innermost ``priority()``, else the process's (interactive)."""
    return _lane.get() or _process_lane


def set_process_lane(lane: Lane) -> None:
    """Make ``lane`` the lane of this process's calls made outside any ``priority()``."""
    global _process_lane  # noqa: PLW0603 - one default per process, set by its integration
    if lane not in LANES:
        raise ValueError(f"the lane is 'interactive' or 'batch', got {lane!r}")
    _process_lane = lane


@contextlib.contextmanager
def default_lane(lane: Lane) -> Iterator[None]:
    """``lane``, unless the caller chose one (batch runs are batch unless told otherwise)."""
    if _lane.get() is not None:
        yield
        return
    with priority(lane):
        yield
