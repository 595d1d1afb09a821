"""``imap`` with a journal: each outcome recorded as it completes, replayed on a rerun.

A wrapper around what ``imap`` returns: the work runs through an ``imap`` (ordered or not,
as the caller asked) whose results come back to the caller's thread, which records each one
as it is handed over. So the journal is only ever touched from that thread, items are
looked up as ``imap`` pulls them (on that thread too), and the journal keeps ``imap``'s
promises: bounded memory in order, ``timeout`` as ``imap`` means it.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..._errors import RecordedError
from .._scope import deadline_at
from .._validate import check_concurrency
from ._codec import dumps, loads
from ._keys import DEFAULT_KEY_SCHEME, default_key
from ._open import store_for
from ._outcomes import Status, status_of_exception
from ._store import Entry, JournalStore

__all__ = ["JournalIterator", "RunCounts", "Start", "imap_start", "open_journal", "open_store"]

#: An outcome: ``(True, value)`` when fn returned, ``(False, exception)`` when it raised.
Outcome = tuple[bool, Any]
#: Starts the work: ``start(run, entries, on_finished)`` runs the async ``run`` over
#: ``entries`` as ``imap`` does and returns its iterator, closeable; it calls
#: ``on_finished(result)`` on the caller's thread as each ``run`` returns, in completion
#: order, so a result is recorded as soon as it is answered, even while it waits for its
#: turn (``ordered``). ``bridge._integration.imap_start`` makes one.
Start = Callable[
    [Callable[[Any], Awaitable[Any]], Iterator[Any], Callable[[Any], None]], Iterator[Any]
]


@dataclass
class RunCounts:
    """What one run did: outcomes replayed from the journal, items run (and rerun)."""

    replayed: int = 0
    run: int = 0
    #: Of ``run``: items whose recorded outcome was a failure (retryable, or final with
    #: ``retry_failed``), attempted again.
    rerun: int = 0


class _Skip:
    """An item whose outcome the journal already holds; it passes through untouched."""

    __slots__ = ("outcome",)

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


@dataclass(slots=True)
class _Done:
    """One item's outcome; ``fresh`` until recorded (replays never are)."""

    key: str
    outcome: Outcome
    fresh: bool


def _always_ok(value: object) -> Status:
    return "ok"


class JournalIterator(Iterator[Any]):
    """Records each outcome as it completes; yields them in order (or as they finish).

    Failures raise (closing the iteration) unless ``return_exceptions``, then they are
    yielded. ``judge`` gives a returned value's status (default: always ``ok``), for
    callers whose results can themselves be failures, such as an HTTP response line.
    Outcomes are recorded in the order ``start``'s iterator hands them over.
    """

    def __init__(
        self,
        start: Start,
        invoke: Callable[[Any], Awaitable[Any]],
        items: Iterable[Any],
        *,
        store: JournalStore,
        key: Callable[[Any], str],
        retry_failed: bool,
        return_exceptions: bool,
        judge: Callable[[Any], Status] = _always_ok,
    ) -> None:
        self._store = store
        self._key = key
        self._invoke = invoke
        self._retry_failed = retry_failed
        self._return_exceptions = return_exceptions
        self._judge = judge
        self._closed = False
        self._broken = False
        self.counts = RunCounts()
        self._inner = start(self._run, self._entries(iter(items)), self._record)

    def _entries(self, items: Iterator[Any]) -> Iterator[tuple[str, Any]]:
        # Runs on the caller's thread (imap pulls input there), so lookups may use the store.
        for item in items:
            key = self._key(item)
            if not isinstance(key, str):
                raise TypeError(f"key= must return a str, got {type(key).__name__} for {item!r}")
            outcome = self._replay(self._store.lookup(key))
            yield key, item if outcome is None else _Skip(outcome)

    def _replay(self, entry: Entry | None) -> Outcome | None:
        """The recorded outcome to hand back, or None to run the item (again)."""
        again = entry is not None and (
            entry.status == "retryable" or (entry.status == "final" and self._retry_failed)
        )
        if entry is None or again:
            self.counts.run += 1
            self.counts.rerun += again
            return None
        self.counts.replayed += 1
        if entry.value is not None:
            return True, loads(entry.value)
        return False, RecordedError(entry.error_type or "?", entry.error_message or "")

    async def _run(self, entry: tuple[str, Any]) -> _Done:
        key, item = entry
        if isinstance(item, _Skip):
            return _Done(key, item.outcome, fresh=False)
        try:
            value = await self._invoke(item)
        except Exception as exc:  # noqa: BLE001 - recorded, then raised or returned by the caller
            return _Done(key, (False, exc), fresh=True)
        return _Done(key, (True, value), fresh=True)

    def _record(self, done: _Done) -> None:
        """Record a fresh outcome, once (``start`` calls this as each one finishes)."""
        if not done.fresh or self._broken:
            return
        done.fresh = False
        try:
            self._store.record(done.key, self._entry(done.outcome))
        except BaseException:
            self._broken = True  # the run stops; close() must not write again
            raise

    def __iter__(self) -> JournalIterator:
        return self

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        try:
            ok, value = self._next_outcome()
        except BaseException:
            self.close()
            raise
        if ok or self._return_exceptions:
            return value
        self.close()
        raise value

    def _next_outcome(self) -> Outcome:
        done: _Done = next(self._inner)
        self._record(done)  # recorded already, unless this start does not say when it ends
        return done.outcome

    def _entry(self, outcome: Outcome) -> Entry:
        ok, value = outcome
        if ok:
            return Entry(status=self._judge(value), value=dumps(value))
        return Entry(
            status=status_of_exception(value),
            error_type=type(value).__qualname__,
            error_message=str(value),
        )

    def close(self) -> None:
        """Cancel the calls in flight and close the journal; what finished stays recorded."""
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._store.close()


def imap_start(runner: Any, *, concurrency: int | None, ordered: bool) -> Start:
    """The ``Start`` of ``runner.imap(..., concurrency=, ordered=)`` (``runner``: a Bridge).

    The integrations journal through this rather than ``functools.partial(bridge.imap)``,
    whose results would be recorded only when handed over, in order.
    """
    limit = check_concurrency(concurrency, runner.concurrency)
    return runner._starter(limit, ordered, None, deadline_at())  # type: ignore[no-any-return]


def open_store(store: JournalStore, config: Mapping[str, str], *, fresh: bool = False) -> None:
    """Lock and open ``store``; closed again if either fails."""
    try:
        store.lock()
        store.open(config, fresh=fresh)
    except BaseException:
        store.close()
        raise


def open_journal(
    start: Start,
    invoke: Callable[[Any], Awaitable[Any]],
    items: Iterable[Any],
    *,
    journal: str | os.PathLike[str],
    function: str,
    key: Callable[[Any], str] | None,
    retry_failed: bool,
    return_exceptions: bool,
) -> JournalIterator:
    """Build the journaled iterator behind ``map``/``imap`` with ``journal=``.

    ``function`` names the function whose outcomes the journal holds.

    Raises:
        JournalLockedError: another process is writing this journal.
        JournalMismatchError: the journal was written for another function or key scheme.
    """
    scheme = DEFAULT_KEY_SCHEME if key is None else f"key:{qualified_name(key)}"
    store = store_for(journal, default_batch=function)
    open_store(store, {"function": function, "key_scheme": scheme})
    try:
        return JournalIterator(
            start,
            invoke,
            items,
            store=store,
            key=key or default_key,
            retry_failed=retry_failed,
            return_exceptions=return_exceptions,
        )
    except BaseException:
        store.close()
        raise


def qualified_name(fn: object) -> str:
    """``module.qualname`` of a function (or of a callable object's class)."""
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
