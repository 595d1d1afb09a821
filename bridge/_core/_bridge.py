"""The ``Bridge`` class: a blocking facade over one event loop thread and one thread pool."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable, Sized
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, overload

from .._errors import ReentrancyError, surfaced
from .._extras import require
from ._iterators import AsyncIteratorBridge, CloseableIterator, IMapIterator
from ._progress import Progress, wanted, with_progress
from ._runner import LoopRunner
from ._scope import deadline_at, default_lane
from ._submit import Attach, Submitter
from ._tasks import as_coroutine, run_bounded
from ._threads import call_in_pool, in_pool_thread, run_sync
from ._validate import (
    check_awaitable,
    check_concurrency,
    check_grace,
    check_timeout,
    describe,
    is_async_callable,
)

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
        cancel = DEFAULT_CANCEL_TIMEOUT if grace is None else grace
        # Every open bridge is closed at interpreter exit; see _runner._close_all.
        self._runner = LoopRunner(threads=threads, name=name, close_timeout=cancel)
        self._threads = threads
        self._submit = Submitter(self._runner, cancel, _attach_for(thread_sensitive))

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
    def cancel_timeout(self) -> float:
        return self._submit.cancel_timeout

    @property
    def thread_sensitive(self) -> bool:
        return self._submit.thread_sensitive

    @property
    def closed(self) -> bool:
        return self._runner.closing

    # -- the blocking API -----------------------------------------------------------

    def run(self, awaitable: Awaitable[T], *, timeout: float | None = None) -> T:
        """Run one awaitable on the bridge's loop and return its result.

        The caller's contextvars are copied into the task. Ctrl-C cancels it, and its
        clean-up gets ``cancel_timeout`` seconds before the interrupt reaches you.

        Args:
            awaitable: a coroutine (``fetch(url)``, not ``fetch``), task or future.
            timeout: seconds to wait; the awaitable is cancelled after them. ``None``
                (default) or ``math.inf`` waits for ever.

        Raises:
            TypeError: ``awaitable`` is not awaitable (say, an ``async def`` function
                passed without calling it).
            ValueError: ``timeout`` is NaN, zero or negative.
            TimeoutError: it did not finish within ``timeout`` seconds; it was cancelled.
            ReentrancyError: called from inside the bridge's own loop.
            BridgeClosedError: the bridge is closed.
        """
        coro: Coroutine[Any, Any, T] = as_coroutine(check_awaitable(awaitable, "run"))
        try:
            seconds = check_timeout(timeout)
        except BaseException:
            coro.close()
            raise
        return self._submit.call(coro, seconds, where="run")

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
        """Await many awaitables, at most ``concurrency`` at once; results in input order.

        Args:
            *awaitables: coroutines, tasks or futures.
            concurrency: how many run at once (default: the bridge's ``concurrency``, 16).
            timeout: seconds for the whole call; everything still running is cancelled.
            return_exceptions: put each failure in its place in the results instead of
                raising the first one (which cancels the rest).

        Raises:
            TypeError: an argument is not awaitable.
            ValueError: a bad ``concurrency`` or ``timeout``.
            TimeoutError: the call did not finish within ``timeout``.
        """
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
        return self._submit.call(work, seconds, where="gather", on_discard=lambda: _discard(aws))

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
        fn: Callable[[A], Awaitable[T]],
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

        Args:
            fn: an ``async def`` function (it runs on the loop) or a plain one (it runs in
                the bridge's thread pool); a plain function that returns an awaitable, such
                as a lambda around a client call, has it awaited on the loop.
            iterable: the items; read whole before the first call.
            concurrency: calls at once (default: the bridge's ``concurrency``, 16).
            timeout: seconds for the whole call, with or without ``journal`` and
                ``progress``; what is still running is then cancelled.
            journal: a path (SQLite) or a ``postgresql://`` URL. Each outcome is recorded
                as it completes; a rerun returns the recorded ones and runs the rest, and
                failures a new attempt may cure (429, 5xx, timeouts) run again.
            key: ``key(item) -> str`` names an item in the journal (default: a hash of
                the item, refused for items that would not name themselves stably).
            retry_failed: also run again the items whose recorded failure was final.
            progress: ``True`` draws a bar on a terminal's stderr, ``"force"`` always.
            return_exceptions: put each failure in its place in the results instead of
                raising the first one (which cancels the rest).

        Raises:
            TypeError: ``fn`` is not callable, or a result cannot be journaled.
            ValueError: a bad ``concurrency`` or ``timeout``.
            TimeoutError: the call did not finish within ``timeout``.
            JournalLockedError: another process is writing the journal.
            JournalMismatchError: the journal holds another function's outcomes.
            ReentrancyError: called from the bridge's loop, or with a plain ``fn`` from
                one of its pool threads.
        """
        if journal is not None or wanted(progress):
            # Each result must come back to this thread (to be recorded, or counted), as
            # imap hands them over; timeout still bounds the whole call.
            seconds = check_timeout(timeout)
            deadline = None if seconds is None else time.monotonic() + seconds
            options = _Options(
                concurrency, True, None, deadline, journal, key, retry_failed, return_exceptions
            )
            return list(self._results(fn, list(iterable), "map", options, progress))
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
        return self._submit.call(work, seconds, where="map")

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
        for their turn (never more than 10,000 read ahead in all), so an endless generator
        runs in bounded memory, with or without a journal. ``close()`` (or dropping the
        iterator) cancels the calls in flight. The first failure cancels the rest and is
        raised.

        Args:
            fn: as for :meth:`map`.
            iterable: the items, pulled lazily on the caller's thread.
            concurrency: calls at once (default: the bridge's ``concurrency``, 16).
            ordered: yield in input order (default), or as results finish.
            timeout: seconds to wait for each next result.
            journal, key, retry_failed, progress: as for :meth:`map`.

        Raises:
            TimeoutError: a result took longer than ``timeout``; the rest were cancelled.
            The errors of :meth:`map`.
        """
        seconds = check_timeout(timeout)
        options = _Options(concurrency, ordered, seconds, None, journal, key, retry_failed, False)
        return self._results(fn, iterable, "imap", options, progress)

    def iterate(
        self, async_iterable: AsyncIterable[T], *, timeout: float | None = None
    ) -> CloseableIterator[T]:
        """A plain iterator over an async iterable, each item fetched on the bridge's loop.

        Leaving early (``break``, an exception, ``close()``, garbage collection) runs the
        async generator's ``aclose()`` on the loop.

        Args:
            async_iterable: an async generator or stream (``gen()``, not ``gen``).
            timeout: seconds to wait for each item.

        Raises:
            TypeError: ``async_iterable`` is not async-iterable (the message says why).
        """
        if not hasattr(async_iterable, "__aiter__"):
            raise TypeError(_not_async_iterable(async_iterable))
        return AsyncIteratorBridge(self._submit, async_iterable.__aiter__(), check_timeout(timeout))

    def syncify(
        self, fn: Callable[P, Awaitable[T]], *, timeout: float | None = None
    ) -> Callable[P, T]:
        """Return a blocking function with ``fn``'s signature that runs it on this bridge.

        Args:
            fn: an ``async def`` function.
            timeout: seconds each call may take (as for :meth:`run`).

        Raises:
            TypeError: ``fn`` is not an ``async def`` function.
        """
        return make_sync(fn, lambda: self, timeout)

    async def to_thread(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """From async code, run the blocking ``fn(*args, **kwargs)`` in the bridge's pool.

        The pool's size bounds how many run at once, and the caller's contextvars are copied.

        Args:
            fn: a plain (blocking) function.
            *args, **kwargs: its arguments.

        Raises:
            BridgeClosedError: the bridge is closed (``fn`` is not called).
        """
        pool = self._submit.usable_pool()
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await call_in_pool(pool, call, self._submit.cancel_timeout)

    # -- lifecycle ------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Cancel what is left, close async generators and the pool, and stop the loop.

        Waits at most ``timeout`` seconds (default: ``cancel_timeout``) for tasks to finish
        cancelling. Closing twice is harmless; using a closed bridge raises BridgeClosedError.

        Raises:
            ValueError: ``timeout`` is not a finite number of seconds above 0.
        """
        grace = check_grace(timeout, "close(timeout=)")
        self._runner.close(self._submit.cancel_timeout if grace is None else grace)

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

    def _results(
        self,
        fn: Callable[[A], Any],
        iterable: Iterable[A],
        where: str,
        options: _Options,
        progress: Progress,
    ) -> CloseableIterator[Any]:
        """``imap``'s iterator, wrapped in a journal and a progress bar when asked for.

        Each option is one wrapper around what ``imap`` returns, so an option is added in
        one place, and ``timeout``, order and memory mean the same with or without them.
        """
        invoke = self._invoker(fn, where)
        limit = check_concurrency(options.concurrency, self._concurrency)
        total = len(iterable) if isinstance(iterable, Sized) else None

        scoped = deadline_at()  # the bridge.deadline() in force bounds the whole iteration
        deadline = options.deadline
        if scoped is not None and (deadline is None or scoped < deadline):
            deadline = scoped

        start = self._starter(limit, options.ordered, options.timeout, deadline)

        results: CloseableIterator[Any]
        if options.journal is not None:
            from ._journal import open_journal, qualified_name  # noqa: PLC0415 - sqlite3

            # A journaled run is a batch: nobody waits on one item (unless told otherwise).
            with default_lane("batch"):
                results = open_journal(
                    start, invoke, iterable, journal=options.journal,
                    function=qualified_name(fn), key=options.key,
                    retry_failed=options.retry_failed,
                    return_exceptions=options.return_exceptions,
                )  # fmt: skip
        else:
            results = start(_captured(invoke) if options.return_exceptions else invoke, iterable)
        if not wanted(progress):
            return results
        return with_progress(results, total=total, label=f"bridge.{where}")  # type: ignore[return-value]

    def _starter(
        self, limit: int, ordered: bool, timeout: float | None, deadline: float | None
    ) -> Callable[..., Any]:
        """What starts ``imap``'s iterator over a run function (a journal's ``Start``)."""

        def start(
            run: Callable[[Any], Awaitable[Any]],
            items: Iterable[Any],
            on_finished: Callable[[Any], None] | None = None,
        ) -> Any:
            return IMapIterator(
                self._submit,
                run,
                iter(items),
                limit=limit,
                ordered=ordered,
                timeout=timeout,
                deadline=deadline,
                on_finished=on_finished,
            )

        return start

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
        grace = self._submit.cancel_timeout
        return lambda item: run_sync(pool, fn, item, grace)


def _attach_for(thread_sensitive: bool) -> Attach | None:
    """Thread-sensitive calls (see _sensitive.py); asgiref is imported only when asked for."""
    if not thread_sensitive:
        return None
    require("Bridge(thread_sensitive=True)", None, "asgiref")  # Django installs it
    from . import _sensitive  # noqa: PLC0415 - imports asgiref, an optional dependency

    _sensitive.check_supported()
    return _sensitive.attach


@dataclass(frozen=True)
class _Options:
    """How ``map``/``imap`` run, once checked: what their wrappers around imap need."""

    concurrency: int | None
    ordered: bool
    timeout: float | None  # per result (imap)
    deadline: float | None  # for the whole call (map)
    journal: str | os.PathLike[str] | None
    key: Callable[[Any], str] | None
    retry_failed: bool
    return_exceptions: bool


def _captured(invoke: Callable[[A], Awaitable[Any]]) -> Callable[[A], Awaitable[Any]]:
    """``invoke`` with its failure returned, not raised: ``return_exceptions`` through imap."""

    async def captured(item: A) -> Any:
        try:
            return await invoke(item)
        except Exception as exc:  # noqa: BLE001 - kept in its place, as asked
            return surfaced(exc)

    return captured


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
