"""The ``Bridge`` class: a blocking facade over one event loop thread and one thread pool."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable, Sized
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, overload

from ._calls import Call, wait_until
from ._compat import gevent_patched
from ._errors import BridgeClosedError, ReentrancyError
from ._extras import require
from ._iterators import AsyncIteratorBridge, CloseableIterator, IMapIterator
from ._progress import Progress, wanted, with_progress
from ._runner import LoopRunner
from ._tasks import as_coroutine, run_bounded
from ._threads import ThreadPool, call_in_pool, in_pool_thread, run_sync
from ._validate import (
    check_awaitable,
    check_concurrency,
    check_grace,
    check_timeout,
    describe,
    is_async_callable,
)
from ._waiters import Notifier, new_one_shot

__all__ = [
    "DEFAULT_CANCEL_TIMEOUT",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_THREADS",
    "Bridge",
]

T = TypeVar("T")
A = TypeVar("A")
P = ParamSpec("P")

logger = logging.getLogger(__name__)

# _sensitive.attach: (coro, on_discard) -> (coro to run instead, its notifier, on_discard)
_Attach = Callable[
    [Coroutine[Any, Any, Any], Callable[[], None] | None],
    tuple[Coroutine[Any, Any, Any], Notifier, Callable[[], None]],
]

#: Tasks a call runs at once when it names no ``concurrency``. The semaphore is not
#: optional: 5,000 unbounded requests meet a wall of 429s, 16 keep a typical key busy.
DEFAULT_CONCURRENCY = 16
#: Threads for plain callables (``map`` of a sync function, ``to_thread``).
DEFAULT_THREADS = 32
#: Seconds a cancelled call may take to clean up before the caller sees its error.
DEFAULT_CANCEL_TIMEOUT = 5.0


class Bridge:
    """One event loop in a daemon thread and one bounded thread pool, behind blocking calls.

    Both start on first use. Use it as a context manager or call :meth:`close`; the
    process-wide default bridge (see :func:`bridge.get_default`) closes itself at exit.

    Args:
        concurrency: tasks a call runs at once when it names none (default 16).
        threads: size of the pool that runs plain callables (default 32).
        cancel_timeout: seconds a timed-out or interrupted call may spend cleaning up.
        name: prefix of the loop and pool thread names.
        thread_sensitive: run the ``sync_to_async(thread_sensitive=True)`` work of a call's
            coroutine (Django's async ORM) on the calling thread while it waits, as
            ``async_to_sync`` does; needs asgiref. ``bridge.django`` turns it on.
    """

    def __init__(
        self,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        threads: int = DEFAULT_THREADS,
        cancel_timeout: float = DEFAULT_CANCEL_TIMEOUT,
        name: str = "bridge",
        thread_sensitive: bool = False,
    ) -> None:
        self._concurrency = check_concurrency(concurrency, DEFAULT_CONCURRENCY)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a whole number of at least 1, got {threads!r}")
        grace = check_grace(cancel_timeout, "cancel_timeout")
        self._cancel_timeout = DEFAULT_CANCEL_TIMEOUT if grace is None else grace
        # Every open bridge is closed at interpreter exit; see _runner._close_all.
        self._runner = LoopRunner(threads=threads, name=name, close_timeout=self._cancel_timeout)
        self._threads = threads
        # Off: None, so the submit path pays one attribute test. asgiref loads only if on.
        self._attach: _Attach | None = None
        if thread_sensitive:
            require("Bridge(thread_sensitive=True)", None, "asgiref")  # Django installs it
            from . import _sensitive  # noqa: PLC0415 - imports asgiref, an optional dependency

            _sensitive.check_supported()
            self._attach = _sensitive.attach

    def __repr__(self) -> str:
        state = "closed" if self.closed else "running" if self._runner.started else "idle"
        return f"<Bridge concurrency={self._concurrency} threads={self._threads} {state}>"

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def threads(self) -> int:
        return self._threads

    @property
    def thread_sensitive(self) -> bool:
        return self._attach is not None

    @property
    def closed(self) -> bool:
        return self._runner.closing

    # -- the one submit path --------------------------------------------------------

    def _prepare(
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
        return Call(self._runner, loop, coro, ctx, done, finished=finished, on_discard=on_discard)

    def _usable_loop(self, where: str) -> asyncio.AbstractEventLoop:
        if self._runner.in_loop_thread():
            raise ReentrancyError(
                f"bridge.{where}() was called from inside the bridge's own event loop, where "
                "blocking would deadlock it; in a coroutine, `await` the awaitable directly"
            )
        if self._runner.closing:
            raise BridgeClosedError(
                "this bridge is closed; create a new bridge.Bridge() "
                "(or bridge.set_default(bridge.Bridge()) for the process default)"
            )
        return self._runner.loop()

    def _usable_pool(self) -> ThreadPool:
        if self._runner.closing:
            # The pool's threads were told to end; a job queued now would start one that
            # never does, and run fn after close() returned.
            raise BridgeClosedError(
                "this bridge is closed, so to_thread() cannot run anything; create a new "
                "bridge.Bridge() (or bridge.set_default(bridge.Bridge()) for the default)"
            )
        return self._runner.pool()

    def _wait(self, call: Call[T], timeout: float | None, *, where: str) -> T:
        """Submit ``call`` and block until it finishes.

        On timeout or interrupt (Ctrl-C) the call is cancelled and given ``cancel_timeout``
        seconds to clean up before the error reaches the caller. Submitting inside the
        ``try`` means a Ctrl-C that lands just after the task started still cancels it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if not self._run_until(call, deadline):
                raise TimeoutError(
                    f"bridge.{where}() did not finish within {timeout} s; its tasks were "
                    "cancelled (raise the timeout, or lower the work per call)"
                )
            return call.outcome(closing=self._runner.closing)
        finally:
            call.release()

    def _run_until(self, call: Call[Any], deadline: float | None) -> bool:
        """Submit and wait; False (after cancelling and settling) if the deadline passed."""
        try:
            call.submit()
            finished = wait_until(call.wait, deadline, self._runner.loop_alive)
        except BaseException:
            self._settle(call)
            raise
        if not finished:
            self._settle(call)
        return finished

    def _settle(self, call: Call[Any]) -> None:
        if not call.submitted or not self._runner.loop_alive():
            return
        call.cancel()
        if not call.wait(self._cancel_timeout):
            logger.warning(
                "a cancelled call did not finish its clean-up within %s s", self._cancel_timeout
            )

    def _call(
        self,
        coro: Coroutine[Any, Any, T],
        timeout: float | None,
        *,
        where: str,
        on_discard: Callable[[], None] | None = None,
    ) -> T:
        ctx = contextvars.copy_context()
        call = self._prepare(coro, ctx, new_one_shot(), where=where, on_discard=on_discard)
        return self._wait(call, timeout, where=where)

    # -- the blocking API -----------------------------------------------------------

    def run(self, awaitable: Awaitable[T], *, timeout: float | None = None) -> T:
        """Run one awaitable on the bridge's loop and return its result.

        Raises:
            TypeError: ``awaitable`` is not awaitable (say, an ``async def`` function
                passed without calling it).
            TimeoutError: it did not finish within ``timeout`` seconds; it was cancelled.
            ReentrancyError: called from inside the bridge's own loop.
        """
        coro: Coroutine[Any, Any, T] = as_coroutine(check_awaitable(awaitable, "run"))
        try:
            seconds = check_timeout(timeout)
        except BaseException:
            coro.close()
            raise
        return self._call(coro, seconds, where="run")

    @overload
    def gather(
        self,
        *awaitables: Awaitable[T],
        concurrency: int | None = ...,
        timeout: float | None = ...,
        return_exceptions: Literal[False] = ...,
    ) -> list[T]: ...

    @overload
    def gather(
        self,
        *awaitables: Awaitable[T],
        concurrency: int | None = ...,
        timeout: float | None = ...,
        return_exceptions: bool,
    ) -> list[T | BaseException]: ...

    def gather(
        self,
        *awaitables: Awaitable[T],
        concurrency: int | None = None,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> list[T] | list[T | BaseException]:
        """Await many awaitables, at most ``concurrency`` at once; results in input order."""
        try:
            aws = [check_awaitable(aw, "gather") for aw in awaitables]
            limit = check_concurrency(concurrency, self._concurrency)
            seconds = check_timeout(timeout)
        except BaseException:
            _discard(awaitables)
            raise
        if not aws:
            return []
        work = run_bounded(
            len(aws),
            aws.__getitem__,
            limit=limit,
            return_exceptions=return_exceptions,
            unstarted=lambda index: _cancel_unstarted(aws[index]),
        )
        return self._call(work, seconds, where="gather", on_discard=lambda: _discard(aws))

    @overload
    def map(
        self,
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
        self,
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
        self,
        fn: Callable[[A], Awaitable[T]] | Callable[[A], T],
        iterable: Iterable[A],
        *,
        concurrency: int | None = ...,
        timeout: float | None = ...,
        journal: str | os.PathLike[str] | None = ...,
        key: Callable[[A], str] | None = ...,
        retry_failed: bool = ...,
        progress: Progress = ...,
        return_exceptions: bool,
    ) -> list[T | BaseException]: ...

    def map(
        self,
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
        """Call ``fn`` on every item, at most ``concurrency`` at once; results in input order.

        An ``async def`` fn runs on the loop; a plain fn runs in the bridge's thread pool.
        With ``journal=`` (a SQLite path) each outcome is recorded as it completes and a
        rerun skips recorded items; ``timeout`` then bounds the wait for each result.
        ``progress=True`` draws a bar on a terminal (``"force"``: always); results then come
        through ``imap``, so ``timeout`` bounds the wait for each result.
        """
        if journal is not None:  # the resumable path; the plain one below is untouched
            return list(
                self._journaled(
                    fn, iterable, "map", journal, key=key, retry_failed=retry_failed,
                    return_exceptions=return_exceptions, concurrency=concurrency,
                    timeout=timeout, progress=progress,
                )
            )  # fmt: skip
        if wanted(progress):  # a bar needs each result in this thread, as imap gives them
            items = list(iterable)
            call = _capture(fn) if return_exceptions else fn
            results = self.imap(call, items, concurrency=concurrency, timeout=timeout)
            return list(with_progress(results, total=len(items), label="bridge.map"))
        invoke = self._invoker(fn, "map")
        limit = check_concurrency(concurrency, self._concurrency)
        seconds = check_timeout(timeout)
        items = list(iterable)
        if not items:
            return []
        work = run_bounded(
            len(items),
            lambda index: invoke(items[index]),
            limit=limit,
            return_exceptions=return_exceptions,
        )
        return self._call(work, seconds, where="map")

    @overload
    def imap(
        self,
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
        self,
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
        self,
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
        """Yield ``fn(item)`` results as they finish, pulling ``iterable`` lazily.

        At most ``concurrency`` calls run at once, and at most as many finished results wait
        for their turn, so an endless generator runs in bounded memory. ``timeout`` bounds
        the wait for each next result. ``close()`` (or dropping the iterator) cancels the
        calls in flight. The first failure cancels the rest and is raised. With
        ``journal=``, outcomes are recorded and a rerun skips recorded items (see ``map``).
        """
        if journal is not None:  # the resumable path; the plain one below is untouched
            return self._journaled(
                fn, iterable, "imap", journal, key=key, retry_failed=retry_failed,
                return_exceptions=False, concurrency=concurrency, ordered=ordered,
                timeout=timeout, progress=progress,
            )  # fmt: skip
        invoke = self._invoker(fn, "imap")
        results = IMapIterator(
            self,
            invoke,
            iter(iterable),
            limit=check_concurrency(concurrency, self._concurrency),
            ordered=ordered,
            timeout=check_timeout(timeout),
        )
        if not wanted(progress):
            return results
        total = len(iterable) if isinstance(iterable, Sized) else None
        return with_progress(results, total=total, label="bridge.imap")  # type: ignore[return-value]

    def iterate(
        self, async_iterable: AsyncIterable[T], *, timeout: float | None = None
    ) -> CloseableIterator[T]:
        """A plain iterator over an async iterable, each item fetched on the bridge's loop.

        Leaving early (``break``, an exception, ``close()``, garbage collection) runs the
        async generator's ``aclose()`` on the loop. ``timeout`` bounds the wait for each item.
        """
        if not hasattr(async_iterable, "__aiter__"):
            raise TypeError(_not_async_iterable(async_iterable))
        return AsyncIteratorBridge(self, async_iterable.__aiter__(), check_timeout(timeout))

    def syncify(
        self, fn: Callable[P, Awaitable[T]], *, timeout: float | None = None
    ) -> Callable[P, T]:
        """Return a blocking function with ``fn``'s signature that runs it on this bridge."""
        return make_sync(fn, lambda: self, timeout)

    async def to_thread(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """From async code, run the blocking ``fn(*args, **kwargs)`` in the bridge's pool.

        The pool's size bounds how many run at once, and the caller's contextvars are copied.

        Raises:
            BridgeClosedError: the bridge is closed (``fn`` is not called).
        """
        pool = self._usable_pool()
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await call_in_pool(pool, call, self._cancel_timeout)

    # -- lifecycle ------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Cancel what is left, close async generators and the pool, and stop the loop.

        Waits at most ``timeout`` seconds (default: ``cancel_timeout``) for tasks to finish
        cancelling. Closing twice is harmless; using a closed bridge raises BridgeClosedError.

        Raises:
            ValueError: ``timeout`` is not a finite number of seconds above 0.
        """
        grace = check_grace(timeout, "close(timeout=)")
        self._runner.close(self._cancel_timeout if grace is None else grace)

    def __enter__(self) -> Bridge:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers --------------------------------------------------------------------

    def _journaled(
        self,
        fn: Callable[[A], Any],
        iterable: Iterable[A],
        where: str,
        journal: str | os.PathLike[str],
        *,
        key: Callable[[A], str] | None,
        retry_failed: bool,
        **options: Any,
    ) -> CloseableIterator[Any]:
        from ._journal import open_journal  # noqa: PLC0415 - sqlite3 only when journaling

        progress = options.pop("progress", False)
        total = len(iterable) if isinstance(iterable, Sized) else None
        results = open_journal(
            self, fn, iterable, where=where, journal=journal, key=key,
            retry_failed=retry_failed, **options,
        )  # fmt: skip
        if not wanted(progress):
            return results
        return with_progress(results, total=total, label=f"bridge.{where}")  # type: ignore[return-value]

    def _invoker(self, fn: Callable[[A], Any], where: str) -> Callable[[A], Awaitable[Any]]:
        """How to turn one item into an awaitable for the loop: call fn, or go via the pool."""
        if not callable(fn):
            raise TypeError(
                f"{where}() expects a function as its first argument, got {describe(fn)}"
            )
        if is_async_callable(fn):
            return fn
        pool = self._runner.pool()
        if in_pool_thread(pool):
            # Its calls would wait for pool threads while holding one: enough such callers
            # and every thread waits on another, for ever.
            raise ReentrancyError(
                f"bridge.{where}() with the plain function {describe(fn)} was called from one "
                "of the bridge's own pool threads, which could starve the pool; make fn "
                "`async def`, or call it directly in a loop"
            )
        grace = self._cancel_timeout
        return lambda item: run_sync(pool, fn, item, grace)


def _capture(fn: Callable[[A], Any]) -> Callable[[A], Any]:
    """``fn`` with its failure returned, not raised: ``return_exceptions`` through ``imap``.

    An ``async def`` fn stays async (it runs on the loop); a plain one stays plain (it
    still runs in the pool, never on the loop).
    """
    if is_async_callable(fn):

        async def captured(item: A) -> Any:
            try:
                return await fn(item)
            except Exception as exc:  # noqa: BLE001 - kept in its place, as asked
                return exc

        return captured

    def captured_sync(item: A) -> Any:
        try:
            return fn(item)
        except Exception as exc:  # noqa: BLE001 - kept in its place, as asked
            return exc

    return captured_sync


def _discard(awaitables: Iterable[object]) -> None:
    """Close coroutines that will never run, so Python does not warn they were never awaited."""
    for aw in awaitables:
        if inspect.iscoroutine(aw):
            aw.close()


def _cancel_unstarted(aw: object) -> None:
    """On the loop: a gather that stopped early closes or cancels what it never awaited."""
    if isinstance(aw, asyncio.Future):
        aw.cancel()
    else:
        _discard((aw,))


def _not_async_iterable(obj: object) -> str:
    if inspect.isasyncgenfunction(obj):
        return (
            f"iterate() got the async generator function {describe(obj)} itself; "
            "call it first: iterate(gen(...))"
        )
    if hasattr(obj, "__iter__"):
        return (
            f"iterate() expects an async iterable, got {describe(obj)}; "
            "iterate it with a plain for loop"
        )
    return f"iterate() expects an async iterable (async generator or stream), got {describe(obj)}"


def make_sync(
    fn: Callable[P, Awaitable[T]], resolve: Callable[[], Bridge], timeout: float | None
) -> Callable[P, T]:
    """The body of ``syncify``: ``resolve`` picks the bridge at call time."""
    if not callable(fn):
        raise TypeError(f"syncify() expects an async def function, got {describe(fn)}")
    if not is_async_callable(fn):
        raise TypeError(
            f"syncify() expects an async def function, but {describe(fn)} is synchronous "
            "already; call it directly"
        )
    seconds = check_timeout(timeout)

    @functools.wraps(fn)
    def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
        return resolve().run(fn(*args, **kwargs), timeout=seconds)

    return blocking
