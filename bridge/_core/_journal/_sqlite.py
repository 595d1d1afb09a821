"""The SQLite journal store: one file in WAL mode, one commit per recorded outcome.

The lock is ``flock`` on a sidecar file (``run.sqlite.lock``) that holds the holder's pid,
host and start time. The kernel releases it when the holder's process ends, however it
ends, so a lock left by a dead process is simply taken over. The sidecar is never deleted:
deleting a lock file that another process is about to lock would let two processes hold
locks on two different files. ``flock`` works on local disks (and NFSv4); a journal shared
between machines belongs in a server-side store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import sys
from collections.abc import Mapping
from typing import Final

from ..._errors import JournalLockedError, JournalMismatchError
from ._store import Entry, Holder

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

logger = logging.getLogger("bridge.journal")

#: The layout of the tables; a journal written with another one is refused, not misread.
SCHEMA_VERSION: Final = "2"
_SIDECARS: Final = ("-wal", "-shm")


class SQLiteStore:
    """A journal in one SQLite file, locked through ``<path>.lock``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.location = os.fspath(path)
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None

    # -- the lock -----------------------------------------------------------------------

    def lock(self) -> None:
        fd = os.open(f"{self.location}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _try_lock(fd)
        except BlockingIOError:
            holder = Holder.loads(_read(fd))
            os.close(fd)
            raise JournalLockedError(_in_use(self.location, holder)) from None
        except BaseException:
            os.close(fd)
            raise
        previous = Holder.loads(_read(fd))
        if previous is not None:
            # The kernel dropped its lock when it died; its note is all that is left.
            logger.info("journal %s: taking over the lock left by %s", self.location, previous)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, Holder.me().dumps().encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # a clean exit leaves no holder to take over from
        os.close(fd)  # closing the descriptor releases the flock

    # -- the database -------------------------------------------------------------------

    def open(self, config: Mapping[str, str], *, fresh: bool = False) -> None:
        if self._lock_fd is None:
            raise RuntimeError("lock() the journal before opening it")
        if fresh:
            for suffix in ("", *_SIDECARS):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.location + suffix)
        # Autocommit: each INSERT is its own transaction, so each completion is durable.
        self._db = sqlite3.connect(self.location, isolation_level=None)
        try:
            self._create()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise JournalMismatchError(
                f"{self.location} is not a journal ({exc}): pass a journal= path of its "
                "own, such as run.sqlite"
            ) from None
        self._check({"schema": SCHEMA_VERSION, **config})

    def _create(self) -> None:
        db = self._connection()
        db.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL survives a killed process (not a power cut) without an fsync each.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "value TEXT, error_type TEXT, error_message TEXT, finished REAL NOT NULL)"
        )

    def _check(self, config: Mapping[str, str]) -> None:
        db = self._connection()
        stored = dict(db.execute("SELECT name, value FROM meta").fetchall())
        if not stored:
            db.executemany("INSERT INTO meta VALUES (?, ?)", config.items())
            return
        for name, value in config.items():
            if stored.get(name) != value:
                self.close()
                raise JournalMismatchError(_mismatch(self.location, name, stored.get(name), value))

    def lookup(self, key: str) -> Entry | None:
        row = (
            self._connection()
            .execute(
                "SELECT status, value, error_type, error_message, finished FROM results "
                "WHERE key = ?",
                (key,),
            )
            .fetchone()
        )
        if row is None:
            return None
        status, value, error_type, error_message, finished = row
        return Entry(
            status=status,
            value=value,
            error_type=error_type,
            error_message=error_message,
            finished=finished,
        )

    def record(self, key: str, entry: Entry) -> None:
        self._connection().execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
            (key, entry.status, entry.value, entry.error_type, entry.error_message, entry.finished),
        )

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()
        self._unlock()

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"journal {self.location} is not open")
        return self._db


if sys.platform == "win32":  # pragma: no cover - the project is tested on Linux
    import msvcrt

    def _try_lock(fd: int) -> None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            raise BlockingIOError from None

else:
    import fcntl

    def _try_lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace")


def _in_use(location: str, holder: Holder | None) -> str:
    who = str(holder) if holder is not None else "another process (it has not named itself yet)"
    return (
        f"journal {location} is in use by {who}. A journal has one writer, or both runs "
        "would send the same requests: wait for that run to finish, or stop it (a lock left "
        "by a process that died is taken over), or pass another journal path"
    )


def _mismatch(location: str, name: str, stored: str | None, wanted: str) -> str:
    if name in ("schema", "key_scheme") and stored is not None and not stored.startswith("key:"):
        return (
            f"journal {location} was written by another version of bridge ({name} "
            f"{stored!r}; this version uses {wanted!r}), so its keys would not match and "
            "nothing would resume: delete it to start over, or pass a new journal= path"
        )
    return (
        f"journal {location} was written with {name} {stored!r}, not {wanted!r}; its results "
        "belong to another call. Pass a new journal= path, or delete the file to start over"
    )
