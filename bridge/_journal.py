"""Resumable ``map``/``imap``: every outcome recorded in a SQLite journal as it completes.

A rerun of the same call skips the items the journal holds and replays their recorded
outcomes, so it returns what one uninterrupted run would have returned, in order.

The journal is only ever touched from the caller's thread: the work runs through an
unordered ``imap`` whose results come back to that thread, which records each one (one
commit per completion) and puts them back in input order.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._errors import JournalMismatchError, RecordedError

if TYPE_CHECKING:
    import sqlite3

    from ._bridge import Bridge

__all__ = ["Journal", "JournalIterator", "default_key"]

#: Names the default key scheme; changing how default keys are made must change it.
DEFAULT_KEY_SCHEME = "json-sha256-v1"
_SCHEMA_VERSION = "1"
_TAG = "__bridge__"


def default_key(item: object) -> str:
    """A stable key: the SHA-256 of the item's canonical JSON, or of its repr.

    Raises:
        TypeError: the item is not JSON and its repr holds a memory address, so it would
            differ in every run.
    """
    try:
        text = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(item)
        if " at 0x" in text:
            raise TypeError(
                f"cannot make a stable journal key for {text[:80]}: its repr changes between "
                "runs; pass key=lambda item: ... returning a str that identifies the item"
            ) from None
        text = f"repr:{type(item).__qualname__}:{text}"
    return hashlib.sha256(text.encode()).hexdigest()


def _name(fn: object) -> str:
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"


# -- values <-> JSON ------------------------------------------------------------------


def encode(value: object) -> Any:
    """``value`` as JSON-ready data; pydantic models carry their class's import path.

    Raises:
        TypeError: the value (or something inside it) cannot be stored.
    """
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {_TAG: "tuple", "items": [encode(v) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(_unstorable(value, "a dict with non-str keys"))
        data = {k: encode(v) for k, v in value.items()}
        return {_TAG: "dict", "items": data} if _TAG in value else data
    dump = getattr(value, "model_dump", None)
    if callable(dump) and hasattr(type(value), "model_validate"):
        cls = type(value)
        return {
            _TAG: "pydantic",
            "cls": f"{cls.__module__}:{cls.__qualname__}",
            "data": dump(mode="json"),
        }
    raise TypeError(_unstorable(value, type(value).__qualname__))


def _unstorable(value: object, what: str) -> str:
    return (
        f"a journal can only store JSON data (dict with str keys, list, tuple, str, "
        f"numbers, bool, None) and pydantic models, but fn returned {what}: "
        f"{repr(value)[:80]}; return one of those instead (for example a dict of the fields)"
    )


def decode(data: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    tag = data.get(_TAG)
    if tag == "tuple":
        return tuple(decode(v) for v in data["items"])
    if tag == "dict":
        return {k: decode(v) for k, v in data["items"].items()}
    if tag == "pydantic":
        module, _, qualname = data["cls"].partition(":")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        return cls.model_validate(data["data"])
    return {k: decode(v) for k, v in data.items()}


# -- the file -------------------------------------------------------------------------


class Journal:
    """One SQLite file (WAL mode) holding a call's configuration and its outcomes.

    Raises:
        JournalMismatchError: the file was written for another function or key scheme.
    """

    def __init__(self, path: str | os.PathLike[str], *, function: str, key_scheme: str) -> None:
        import sqlite3  # noqa: PLC0415 - only journaled calls pay for it

        self.path = os.fspath(path)
        # Autocommit: each INSERT is its own transaction, so each completion is durable.
        self._db: sqlite3.Connection = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL survives a killed process (not a power cut) without an fsync each.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, ok INTEGER NOT NULL, "
            "value TEXT, error_type TEXT, error_message TEXT, finished REAL NOT NULL)"
        )
        self._check_config(
            {"schema": _SCHEMA_VERSION, "function": function, "key_scheme": key_scheme}
        )

    def _check_config(self, config: dict[str, str]) -> None:
        stored = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        if not stored:
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", config.items())
            return
        for name, value in config.items():
            if stored.get(name) != value:
                self.close()
                raise JournalMismatchError(
                    f"journal {self.path} was written with {name} {stored.get(name)!r}, not "
                    f"{value!r}; its results belong to another call. Pass a new journal= "
                    "path, or delete the file to start over"
                )

    def lookup(self, key: str, *, retry_failed: bool) -> tuple[bool, Any] | None:
        """The recorded outcome ``(ok, value or RecordedError)``, or None to run the item."""
        row = self._db.execute(
            "SELECT ok, value, error_type, error_message FROM results WHERE key = ?", (key,)
        ).fetchone()
        if row is None or (not row[0] and retry_failed):
            return None
        if row[0]:
            return True, decode(json.loads(row[1]))
        return False, RecordedError(row[2], row[3])

    def record(self, key: str, value: object) -> None:
        """Store a result. Raises TypeError, saying what to return, if it cannot be stored."""
        text = json.dumps(encode(value), ensure_ascii=False, allow_nan=True)
        self._db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, 1, ?, NULL, NULL, ?)",
            (key, text, time.time()),
        )

    def record_failure(self, key: str, exc: BaseException) -> None:
        """Store a failure's type and message."""
        self._db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, 0, NULL, ?, ?, ?)",
            (key, type(exc).__qualname__, str(exc), time.time()),
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._db.close()


# -- the iterator ---------------------------------------------------------------------


class _Skip:
    """An item whose outcome the journal already holds; it passes through untouched."""

    __slots__ = ("outcome",)

    def __init__(self, outcome: tuple[bool, Any]) -> None:
        self.outcome = outcome


class JournalIterator(Iterator[Any]):
    """``imap`` with a journal: records each outcome as it completes, yields in order.

    Failures raise (closing the iteration) unless ``return_exceptions``, then they are
    yielded. Finished results that wait for a slower earlier item are held in memory.
    """

    def __init__(
        self,
        bridge: Bridge,
        invoke: Callable[[Any], Awaitable[Any]],
        items: Iterator[Any],
        *,
        journal: Journal,
        key: Callable[[Any], str],
        retry_failed: bool,
        return_exceptions: bool,
        **imap_options: Any,
    ) -> None:
        self._journal = journal
        self._key = key
        self._invoke = invoke
        self._retry_failed = retry_failed
        self._return_exceptions = return_exceptions
        self._ordered = imap_options.pop("ordered", True)
        self._inner = bridge.imap(self._run, self._entries(items), ordered=False, **imap_options)
        self._waiting: dict[int, tuple[bool, Any]] = {}
        self._next_index = 0
        self._closed = False

    def _entries(self, items: Iterator[Any]) -> Iterator[tuple[int, str, Any]]:
        # Runs on the caller's thread (imap pulls input there), so lookups may use the db.
        for index, item in enumerate(items):
            key = self._key(item)
            if not isinstance(key, str):
                raise TypeError(f"key= must return a str, got {type(key).__name__} for {item!r}")
            outcome = self._journal.lookup(key, retry_failed=self._retry_failed)
            yield index, key, item if outcome is None else _Skip(outcome)

    async def _run(self, entry: tuple[int, str, Any]) -> tuple[int, str, Any, bool]:
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

    def _next_outcome(self) -> tuple[bool, Any]:
        while not (self._ordered and self._next_index in self._waiting):
            index, key, outcome, fresh = next(self._inner)
            if fresh:
                self._record(key, outcome)
            if not self._ordered:
                return outcome  # type: ignore[no-any-return]
            self._waiting[index] = outcome
        outcome = self._waiting.pop(self._next_index)
        self._next_index += 1
        return outcome

    def _record(self, key: str, outcome: tuple[bool, Any]) -> None:
        ok, value = outcome
        if ok:
            self._journal.record(key, value)
        else:
            self._journal.record_failure(key, value)

    def close(self) -> None:
        """Cancel the calls in flight and close the journal; what finished stays recorded."""
        if self._closed:
            return
        self._closed = True
        try:
            self._inner.close()
        finally:
            self._journal.close()


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
    """Build the journaled iterator behind ``map``/``imap`` with ``journal=``."""
    scheme = DEFAULT_KEY_SCHEME if key is None else f"key:{_name(key)}"
    invoke = bridge._invoker(fn, where)
    store = Journal(journal, function=_name(fn), key_scheme=scheme)
    return JournalIterator(
        bridge,
        invoke,
        iter(iterable),
        journal=store,
        key=key or default_key,
        retry_failed=retry_failed,
        return_exceptions=return_exceptions,
        **imap_options,
    )
