"""Which store a ``journal=`` argument names."""

from __future__ import annotations

import os

from ._store import JournalStore

__all__ = ["store_for"]


def store_for(journal: str | os.PathLike[str], *, default_batch: str | None = None) -> JournalStore:
    """The store for a ``journal=`` argument: a path names a SQLite file, a
    ``postgresql://`` URL a batch in PostgreSQL (``?batch=NAME``, else ``default_batch``).
    """
    from ._postgres import PostgresStore, is_postgres_url  # noqa: PLC0415 - psycopg on use

    if is_postgres_url(journal):
        return PostgresStore(str(journal), default_batch=default_batch)
    from ._sqlite import SQLiteStore  # noqa: PLC0415 - sqlite3 only when journaling

    return SQLiteStore(journal)
