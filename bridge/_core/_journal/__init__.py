"""Resumable ``map``/``imap``: every outcome recorded in a journal as it completes.

A rerun of the same call replays the outcomes the journal holds and runs the rest, so it
returns what one uninterrupted run would have returned, in order. Failures that a new
attempt may cure (429, 5xx, timeouts...) are run again; final ones are replayed.

- ``_keys``: the default item key (typed, never aliasing).
- ``_codec``: results to JSON text and back, faithfully or refused.
- ``_outcomes``: which failures are retryable and which are final.
- ``_store``: the store interface (lock, open, lookup, record, close); ``_sqlite``: SQLite.
- ``_iterator``: the journaled iterator behind ``map``/``imap(journal=...)``.
"""

from __future__ import annotations

from ._codec import dumps, loads
from ._iterator import (
    JournalIterator,
    RunCounts,
    imap_start,
    open_journal,
    open_store,
    qualified_name,
)
from ._keys import DEFAULT_KEY_SCHEME, default_key
from ._open import store_for
from ._outcomes import RETRYABLE_STATUSES, Status, status_of_exception, status_of_http
from ._store import Entry, Holder, JournalStore

__all__ = [
    "DEFAULT_KEY_SCHEME",
    "RETRYABLE_STATUSES",
    "Entry",
    "Holder",
    "JournalIterator",
    "JournalStore",
    "RunCounts",
    "Status",
    "default_key",
    "dumps",
    "imap_start",
    "loads",
    "open_journal",
    "open_store",
    "qualified_name",
    "status_of_exception",
    "status_of_http",
    "store_for",
]
