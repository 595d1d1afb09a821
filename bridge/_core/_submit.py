"""The one way work reaches a bridge's loop: a narrow interface that ``Bridge`` owns.

``Bridge``'s blocking methods and the iterators (``imap``, ``iterate``) all submit through
a :class:`Submitter`: prepare a :class:`Call` for a coroutine, submit it and wait (bounded,
cancelling on timeout or Ctrl-C), or fire one without waiting from a finaliser. So the
iterators never reach into ``Bridge``, and a change to how calls cross to the loop (thread
sensitivity, gevent) is made here once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .._errors import BridgeClosedError, DeadlineExceeded, ReentrancyError
from ._calls import Call, wait_until
from ._compat import gevent_patched
from ._runner import LoopRunner
from ._scope import deadline_at
from ._threads import ThreadPool
from ._waiters import NULL_NOTIFIER, Notifier, new_one_shot

__all__ = ["Attach", "Submitter"]

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: _sensitive.attach: (coro, on_discard) -> (coro to run instead, its notifier, on_discard)
Attach = Callable[
    [Coroutine[Any, Any, Any], Callable[[], None] | None],
    tuple[Coroutine[Any, Any, Any], Notifier, Callable[[], None]],
]


class Submitter:
    """Prepares, submits and waits for calls on one runner's loop."""

    def __init__(self, runner: LoopRunner, cancel_timeout: float, attach: Attach | None) -> None:
        self.runner = runner
        #: Seconds a cancelled call may take to clean up before its caller sees the error.
        self.cancel_timeout = cancel_timeout
        # Off: None, so the submit path pays one attribute test.
        self._attach = attach

    @property
    def closed(self) -> bool:
        return self.runner.closing

    @property
    def thread_sensitive(self) -> bool:
        return self._attach is not None

    def loop_alive(self) -> bool:
        return self.runner.loop_alive()

    def prepare(
        self,
        coro: Coroutine[Any, Any, T],
        ctx: contextvars.Context,
        done: Notifier,
        finished: deque[Call[T]] | None = None,
        *,
        where: str,
        on_discard: Callable[[], None] | None = None,
    ) -> Call[T]:
        """Make the call that will run ``coro`` on the loop; ``Call.submit()`` starts it.

        If it cannot (re-entrant use, a closed bridge), ``coro`` is closed, ``on_discard``
        runs, so nothing is left never-awaited, and the error is raised.
        """
        try:
            loop = self._usable_loop(where)
        except BaseException:
            coro.close()
            if on_discard is not None:
                on_discard()
            raise
        if self._attach is not None and finished is None and not gevent_patched():
            # Thread-sensitive (see _sensitive.py): the executor that runs the task's
            # sync_to_async work on this thread replaces ``done``, so every wait below
            # (_run_until, _settle) runs that work. imap's shared notifier and gevent's
            # hub cannot wait that way, so they keep the plain path.
            done.close()
            coro, done, on_discard = self._attach(coro, on_discard)
        return Call(self.runner, loop, coro, ctx, done, finished=finished, on_discard=on_discard)

    def call(
        self,
        coro: Coroutine[Any, Any, T],
        timeout: float | None,
        *,
        where: str,
        on_discard: Callable[[], None] | None = None,
    ) -> T:
        """Run ``coro`` on the loop with the caller's context, and block for its outcome."""
        ctx = contextvars.copy_context()
        call = self.prepare(coro, ctx, new_one_shot(), where=where, on_discard=on_discard)
        return self.wait(call, timeout, where=where)

    def wait(self, call: Call[T], timeout: float | None, *, where: str) -> T:
        """Submit ``call`` and block until it finishes.

        On timeout, on the ``bridge.deadline()`` in force, or on interrupt (Ctrl-C) the call
        is cancelled and given ``cancel_timeout`` seconds to clean up before the error
        reaches the caller. Submitting inside the ``try`` means a Ctrl-C that lands just
        after the task started still cancels it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        scoped = deadline_at()
        bound_by_scope = scoped is not None and (deadline is None or scoped < deadline)
        if bound_by_scope:
            deadline = scoped
        try:
            if not self._run_until(call, deadline):
                if bound_by_scope:
                    raise DeadlineExceeded(
                        f"bridge.{where}() did not finish before the bridge.deadline() in "
                        "force; its tasks were cancelled"
                    )
                raise TimeoutError(
                    f"bridge.{where}() did not finish within {timeout} s; its tasks were "
                    "cancelled (raise the timeout, or lower the work per call)"
                )
            return call.outcome(closing=self.runner.closing)
        finally:
            call.release()

    def fire(self, coro: Coroutine[Any, Any, Any], ctx: contextvars.Context) -> None:
        """Submit ``coro`` without waiting (from a finaliser, which must never block).

        Does nothing (and closes ``coro``) when the loop is not running.
        """
        runner = self.runner
        if not runner.started or runner.closing:
            coro.close()
            return
        Call(runner, runner.loop(), coro, ctx, NULL_NOTIFIER).submit()

    def open_loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use, for a task handed over from another loop.

        Raises:
            BridgeClosedError: the bridge is closed.
        """
        if self.runner.closing:
            raise BridgeClosedError("this bridge is closed")
        return self.runner.loop()

    def usable_pool(self) -> ThreadPool:
        """The thread pool, or BridgeClosedError once the bridge is closed."""
        if self.runner.closing:
            # The pool's threads were told to end; a job queued now would start one that
            # never does, and run fn after close() returned.
            raise BridgeClosedError(
                "this bridge is closed, so to_thread() cannot run anything; create a new "
                "bridge.Bridge() (or bridge.set_default(bridge.Bridge()) for the default)"
            )
        return self.runner.pool()

    def _usable_loop(self, where: str) -> asyncio.AbstractEventLoop:
        if self.runner.in_loop_thread():
            raise ReentrancyError(
                f"bridge.{where}() was called from inside the bridge's own event loop, where "
                "blocking would deadlock it; in a coroutine, `await` the awaitable directly"
            )
        if self.runner.closing:
            raise BridgeClosedError(
                "this bridge is closed; create a new bridge.Bridge() "
                "(or bridge.set_default(bridge.Bridge()) for the process default)"
            )
        return self.runner.loop()

    def _run_until(self, call: Call[Any], deadline: float | None) -> bool:
        """Submit and wait; False (after cancelling and settling) if the deadline passed."""
        try:
            call.submit()
            finished = wait_until(call.wait, deadline, self.runner.loop_alive)
        except BaseException:
            self._settle(call)
            raise
        if not finished:
            self._settle(call)
        return finished

    def _settle(self, call: Call[Any]) -> None:
        if not call.submitted or not self.runner.loop_alive():
            return
        call.cancel()
        if not call.wait(self.cancel_timeout):
            logger.warning(
                "a cancelled call did not finish its clean-up within %s s", self.cancel_timeout
            )
