"""Which store a ``journal=`` argument names."""

from __future__ import annotations

import os

from ._store import JournalStore

__all__ = ["store_for"]


def store_for(journal: str | os.PathLike[str]) -> JournalStore:
    """The store for a ``journal=`` argument: a path names a SQLite file."""
    from ._sqlite import SQLiteStore  # noqa: PLC0415 - sqlite3 only when journaling

    return SQLiteStore(journal)
