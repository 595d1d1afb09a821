"""``imap`` with a journal: each outcome recorded as it completes, replayed on a rerun.

The journal is only ever touched from the caller's thread: the work runs through an
unordered ``imap`` whose results come back to that thread, which records each one and puts
them back in input order. Items are looked up as ``imap`` pulls them, on that thread too.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import RecordedError
from ._codec import dumps, loads
from ._keys import DEFAULT_KEY_SCHEME, default_key
from ._outcomes import Status, status_of_exception
from ._store import Entry, JournalStore, store_for

if TYPE_CHECKING:
    from .._bridge import Bridge

__all__ = ["JournalIterator", "RunCounts", "open_journal", "open_store"]

#: An outcome: ``(True, value)`` when fn returned, ``(False, exception)`` when it raised.
Outcome = tuple[bool, Any]


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


def _always_ok(value: object) -> Status:
    return "ok"


class JournalIterator(Iterator[Any]):
    """Records each outcome as it completes; yields them in order (or as they finish).

    Failures raise (closing the iteration) unless ``return_exceptions``, then they are
    yielded. ``judge`` gives a returned value's status (default: always ``ok``), for
    callers whose results can themselves be failures, such as an HTTP response line.
    Finished results that wait for a slower earlier item are held in memory.
    """

    def __init__(
        self,
        bridge: Bridge,
        invoke: Callable[[Any], Awaitable[Any]],
        items: Iterator[Any],
        *,
        store: JournalStore,
        key: Callable[[Any], str],
        retry_failed: bool,
        return_exceptions: bool,
        judge: Callable[[Any], Status] = _always_ok,
        **imap_options: Any,
    ) -> None:
        self._store = store
        self._key = key
        self._invoke = invoke
        self._retry_failed = retry_failed
        self._return_exceptions = return_exceptions
        self._judge = judge
        self._ordered = imap_options.pop("ordered", True)
        self._inner = bridge.imap(self._run, self._entries(items), ordered=False, **imap_options)
        self._waiting: dict[int, Outcome] = {}
        self._next_index = 0
        self._closed = False
        self.counts = RunCounts()

    def _entries(self, items: Iterator[Any]) -> Iterator[tuple[int, str, Any]]:
        # Runs on the caller's thread (imap pulls input there), so lookups may use the store.
        for index, item in enumerate(items):
            key = self._key(item)
            if not isinstance(key, str):
                raise TypeError(f"key= must return a str, got {type(key).__name__} for {item!r}")
            outcome = self._replay(self._store.lookup(key))
            yield index, key, item if outcome is None else _Skip(outcome)

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

    async def _run(self, entry: tuple[int, str, Any]) -> tuple[int, str, Outcome, bool]:
        index, key, item = entry
        if isinstance(item, _Skip):
            return index, "", item.outcome, False
        try:
            value = await self._invoke(item)
        except Exception as exc:  # noqa: BLE001 - recorded, then raised or returned by the caller
            return index, key, (False, exc), True
        return index, key, (True, value), True

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
        while not (self._ordered and self._next_index in self._waiting):
            index, key, outcome, fresh = next(self._inner)
            if fresh:
                self._store.record(key, self._entry(outcome))
            if not self._ordered:
                return outcome  # type: ignore[no-any-return]
            self._waiting[index] = outcome
        outcome = self._waiting.pop(self._next_index)
        self._next_index += 1
        return outcome

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
            self._inner.close()
        finally:
            self._store.close()


def open_store(store: JournalStore, config: Mapping[str, str], *, fresh: bool = False) -> None:
    """Lock and open ``store``; closed again if either fails."""
    try:
        store.lock()
        store.open(config, fresh=fresh)
    except BaseException:
        store.close()
        raise


def open_journal(
    bridge: Bridge,
    fn: Callable[[Any], Any],
    iterable: Any,
    *,
    where: str,
    journal: str | os.PathLike[str],
    key: Callable[[Any], str] | None,
    retry_failed: bool,
    return_exceptions: bool,
    **imap_options: Any,
) -> JournalIterator:
    """Build the journaled iterator behind ``map``/``imap`` with ``journal=``.

    Raises:
        JournalLockedError: another process is writing this journal.
        JournalMismatchError: the journal was written for another function or key scheme.
    """
    scheme = DEFAULT_KEY_SCHEME if key is None else f"key:{qualified_name(key)}"
    invoke = bridge._invoker(fn, where)
    items = iter(iterable)
    store = store_for(journal, default_batch=qualified_name(fn))
    open_store(store, {"function": qualified_name(fn), "key_scheme": scheme})
    try:
        return JournalIterator(
            bridge,
            invoke,
            items,
            store=store,
            key=key or default_key,
            retry_failed=retry_failed,
            return_exceptions=return_exceptions,
            **imap_options,
        )
    except BaseException:
        store.close()
        raise


def qualified_name(fn: object) -> str:
    """``module.qualname`` of a function (or of a callable object's class)."""
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"
