"""The PostgreSQL journal store: one table for every batch, keyed by (batch id, item key).

Many processes on many machines write one batch at once: each outcome is one upsert,
committed on its own (autocommit), so concurrent writers never block each other for longer
than a row. Who may write is decided by PostgreSQL advisory locks, held on the writer's
session, which the server releases when that session ends, however its process ends:

- ``writer`` (``map``/``imap(journal=...)``, the single-process batch command): an
  exclusive lock on the batch. One journal, one writer, as with SQLite.
- ``driver`` (the process that splits a distributed batch into chunks and waits): a
  shared lock on the batch, and an exclusive one on the batch's driver slot.
- ``chunk`` (a worker running chunk ``n`` of a distributed batch): a shared lock on the
  batch, and an exclusive one on chunk ``n``, waited for if a duplicate delivery of the
  same chunk is still running elsewhere.

So a writer excludes every distributed participant and the reverse; the driver and the
workers share the batch, at most one driver at a time, and one worker per chunk. The
batch locks use the one-``bigint`` key space and the driver and chunk locks the
two-``int`` one, which PostgreSQL keeps apart. A ``holders`` row names the writer or
driver (pid, host, start) for the message of whoever is refused; rows of holders whose
session is gone are ignored.

A URL's password is never kept in anything shown: ``location`` has none.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from ..._errors import JournalLockedError, JournalMismatchError, JournalUnavailableError
from ._store import Entry, Holder

__all__ = ["SCHEMA_VERSION", "PostgresStore", "is_postgres_url", "redacted_url"]

#: The layout of the tables; a batch written with another one is refused, not misread.
SCHEMA_VERSION: Final = "pg-1"
#: Seconds to reach the server before counting it as unreachable.
CONNECT_TIMEOUT: Final = 5
#: Keys per query when many are looked up at once.
LOOKUP_BATCH: Final = 500

Role = Literal["writer", "driver", "chunk"]

_SCHEMES: Final = ("postgresql://", "postgres://")
_BATCH_PARAM: Final = "batch"
_DRIVER_SLOT: Final = -1
# Serialises CREATE TABLE IF NOT EXISTS between processes (it races on the catalogue).
_DDL_LOCK: Final = 0x6272_6964_6765_6A6C  # "bridgejl"

_DDL: Final = (
    """CREATE TABLE IF NOT EXISTS bridge_journal (
        batch_id text NOT NULL, key text NOT NULL, status text NOT NULL, value text,
        error_type text, error_message text, finished double precision NOT NULL,
        recorded timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (batch_id, key))""",
    """CREATE INDEX IF NOT EXISTS bridge_journal_recorded
        ON bridge_journal (batch_id, recorded)""",
    """CREATE TABLE IF NOT EXISTS bridge_journal_meta (
        batch_id text NOT NULL, name text NOT NULL, value text NOT NULL,
        PRIMARY KEY (batch_id, name))""",
    """CREATE TABLE IF NOT EXISTS bridge_journal_holders (
        batch_id text NOT NULL, role text NOT NULL, pid integer NOT NULL, host text NOT NULL,
        started double precision NOT NULL, backend integer NOT NULL,
        PRIMARY KEY (batch_id, role))""",
)


def is_postgres_url(journal: object) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) journal URL."""
    return isinstance(journal, str) and journal.startswith(_SCHEMES)


def redacted_url(url: str) -> str:
    """``url`` with no user, password or query: safe to show and to log."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


class PostgresStore:
    """One batch of the journal tables in a PostgreSQL database.

    Args:
        url: ``postgresql://user:password@host:port/db``; a ``?batch=NAME`` parameter
            names the batch when ``batch`` is not passed. Other parameters go to libpq.
        batch: the batch id; default the URL's ``batch``, else ``default_batch``.
        role: ``writer``, ``driver`` or ``chunk`` (see the module docstring).
        chunk: the chunk number, for the ``chunk`` role.

    Raises:
        ValueError: the URL is not a PostgreSQL URL, or no batch is named.
    """

    def __init__(
        self,
        url: str,
        *,
        batch: str | None = None,
        default_batch: str | None = None,
        role: Role = "writer",
        chunk: int = 0,
    ) -> None:
        if not is_postgres_url(url):
            raise ValueError(f"not a PostgreSQL URL: {redacted_url(url)!r}")
        self._conninfo, self._secret, from_url = _split_batch(url)
        name = batch or from_url or default_batch
        if not name:
            raise ValueError(
                f"name the batch of the journal {redacted_url(url)}: add ?batch=NAME to the URL"
            )
        self.batch = name
        self.database = redacted_url(url)
        self.location = f"{self.database}?batch={name}"
        self._role = role
        self._chunk = chunk
        self._db: Any = None

    def __repr__(self) -> str:
        return f"<PostgresStore {self.location} role={self._role}>"

    # -- the lock -----------------------------------------------------------------------

    def lock(self) -> None:
        self._connect()
        batch_key, slot_key = _lock_keys(self.batch)
        if self._role == "writer":
            self._take("SELECT pg_try_advisory_lock(%s)", (batch_key,), ("writer", "driver"))
        else:
            self._take("SELECT pg_try_advisory_lock_shared(%s)", (batch_key,), ("writer",))
        if self._role == "driver":
            self._take("SELECT pg_try_advisory_lock(%s, %s)", (slot_key, _DRIVER_SLOT), ("driver",))
        elif self._role == "chunk":
            # A duplicate delivery of this chunk waits for the first to finish, then
            # finds its items recorded and sends none of them again.
            self._execute("SELECT pg_advisory_lock(%s, %s)", (slot_key, self._chunk))
        if self._role != "chunk":
            self._name_holder()

    def _take(self, sql: str, args: tuple[int, ...], rivals: tuple[str, ...]) -> None:
        if self._execute(sql, args).fetchone()[0]:
            return
        holder = self._holder(rivals)
        self.close()
        raise JournalLockedError(_in_use(self.location, self._role, holder))

    def _name_holder(self) -> None:
        me = Holder.me()
        self._execute(
            "INSERT INTO bridge_journal_holders VALUES (%s, %s, %s, %s, %s, pg_backend_pid()) "
            "ON CONFLICT (batch_id, role) DO UPDATE SET pid = excluded.pid, "
            "host = excluded.host, started = excluded.started, backend = excluded.backend",
            (self.batch, self._role, me.pid, me.host, me.started),
        )

    def _holder(self, roles: tuple[str, ...]) -> tuple[str, Holder] | None:
        """The live writer or driver of this batch, if one has named itself."""
        row = self._execute(
            "SELECT role, pid, host, started FROM bridge_journal_holders h WHERE batch_id = %s "
            "AND role = ANY(%s) AND EXISTS (SELECT 1 FROM pg_stat_activity a "
            "WHERE a.pid = h.backend) ORDER BY role DESC LIMIT 1",
            (self.batch, list(roles)),
        ).fetchone()
        if row is None:
            return None
        return row[0], Holder(pid=row[1], host=row[2], started=row[3])

    # -- the tables ---------------------------------------------------------------------

    def open(self, config: Mapping[str, str], *, fresh: bool = False) -> None:
        if self._db is None:
            raise RuntimeError("lock() the journal before opening it")
        if fresh:
            for table in ("bridge_journal", "bridge_journal_meta"):
                self._execute(f"DELETE FROM {table} WHERE batch_id = %s", (self.batch,))  # noqa: S608 - fixed names
        self._check({"schema": SCHEMA_VERSION, **config})

    def _check(self, config: Mapping[str, str]) -> None:
        self._executemany(
            "INSERT INTO bridge_journal_meta VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            [(self.batch, name, value) for name, value in config.items()],
        )
        stored = dict(
            self._execute(
                "SELECT name, value FROM bridge_journal_meta WHERE batch_id = %s", (self.batch,)
            ).fetchall()
        )
        for name, value in config.items():
            if stored.get(name) != value:
                self.close()
                raise JournalMismatchError(_mismatch(self.location, name, stored.get(name), value))

    def lookup(self, key: str) -> Entry | None:
        row = self._execute(
            "SELECT status, value, error_type, error_message, finished FROM bridge_journal "
            "WHERE batch_id = %s AND key = %s",
            (self.batch, key),
        ).fetchone()
        return None if row is None else _entry(row)

    def lookup_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """The entries recorded for ``keys`` (absent keys are left out)."""
        found: dict[str, Entry] = {}
        wanted = list(keys)
        for start in range(0, len(wanted), LOOKUP_BATCH):
            rows = self._execute(
                "SELECT status, value, error_type, error_message, finished, key "
                "FROM bridge_journal WHERE batch_id = %s AND key = ANY(%s)",
                (self.batch, wanted[start : start + LOOKUP_BATCH]),
            ).fetchall()
            found.update((row[5], _entry(row)) for row in rows)
        return found

    def record(self, key: str, entry: Entry) -> None:
        self._execute(
            "INSERT INTO bridge_journal (batch_id, key, status, value, error_type, "
            "error_message, finished) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (batch_id, key) DO UPDATE SET status = excluded.status, "
            "value = excluded.value, error_type = excluded.error_type, "
            "error_message = excluded.error_message, finished = excluded.finished, "
            "recorded = clock_timestamp()",
            (self.batch, key, entry.status, entry.value, entry.error_type,
             entry.error_message, entry.finished),
        )  # fmt: skip

    def server_time(self) -> float:
        """The server's clock (seconds since the epoch), which every writer's rows share."""
        return float(self._execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])

    def recorded_since(self, since: float) -> int:
        """How many items of this batch were recorded at or after ``since`` (server clock)."""
        row = self._execute(
            "SELECT count(*) FROM bridge_journal WHERE batch_id = %s AND recorded >= "
            "to_timestamp(%s)",
            (self.batch, since),
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        db, self._db = self._db, None
        if db is None:
            return
        if self._role != "chunk":
            with contextlib.suppress(Exception):
                db.execute(
                    "DELETE FROM bridge_journal_holders WHERE batch_id = %s AND role = %s "
                    "AND backend = pg_backend_pid()",
                    (self.batch, self._role),
                )
        with contextlib.suppress(Exception):
            db.close()  # ending the session releases its advisory locks

    # -- the connection -----------------------------------------------------------------

    def _connect(self) -> Any:
        if self._db is not None:
            return self._db
        from ..._extras import require  # noqa: PLC0415 - psycopg only for a PostgreSQL journal

        require("journal='postgresql://...'", "postgres", "psycopg")
        import psycopg  # noqa: PLC0415

        try:
            self._db = psycopg.connect(
                self._conninfo,
                autocommit=True,  # each upsert is its own transaction: durable once returned
                connect_timeout=CONNECT_TIMEOUT,
                application_name=f"bridge-journal-{self._role}",
            )
        except psycopg.Error as exc:
            raise JournalUnavailableError(self._unreachable(exc)) from None
        self._create()
        return self._db

    def _create(self) -> None:
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            for statement in _DDL:
                self._db.execute(statement)

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        db = self._connection()
        import psycopg  # noqa: PLC0415 - imported already by _connect

        try:
            return db.execute(sql, args)
        except psycopg.OperationalError as exc:
            self.close()
            raise JournalUnavailableError(self._unreachable(exc)) from None

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        db = self._connection()
        import psycopg  # noqa: PLC0415 - imported already by _connect

        try:
            with db.cursor() as cursor:
                cursor.executemany(sql, rows)
        except psycopg.OperationalError as exc:
            self.close()
            raise JournalUnavailableError(self._unreachable(exc)) from None

    def _connection(self) -> Any:
        if self._db is None:
            raise RuntimeError(f"journal {self.location} is not open")
        return self._db

    def _unreachable(self, exc: BaseException) -> str:
        detail = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", self._secret)
        return (
            f"the journal {self.location} is unreachable ({type(exc).__name__}: {detail}); "
            "what was recorded before stays recorded: start PostgreSQL there (or fix the "
            "URL) and run again to resume"
        )


def _split_batch(url: str) -> tuple[str, str, str | None]:
    """The libpq URL without ``batch=``, its password (to scrub from messages), the batch."""
    parts = urlsplit(url)
    pairs = [p for p in parts.query.split("&") if p]
    batch = next((p.partition("=")[2] for p in pairs if p.partition("=")[0] == _BATCH_PARAM), None)
    rest = "&".join(p for p in pairs if p.partition("=")[0] != _BATCH_PARAM)
    secret = parts.password or next(
        (p.partition("=")[2] for p in pairs if p.partition("=")[0] == "password"), ""
    )
    return parts._replace(query=rest).geturl(), secret, batch


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _lock_keys(batch: str) -> tuple[int, int]:
    """The batch's ``bigint`` lock key and the ``int`` that heads its two-int keys."""
    digest = hashlib.sha256(f"bridge-journal:{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True), int.from_bytes(
        digest[8:12], "big", signed=True
    )


def _entry(row: tuple[Any, ...]) -> Entry:
    status, value, error_type, error_message, finished = row[:5]
    return Entry(
        status=status,
        value=value,
        error_type=error_type,
        error_message=error_message,
        finished=finished,
    )


def _in_use(location: str, role: Role, holder: tuple[str, Holder] | None) -> str:
    if holder is None:
        who = (
            "the workers of a distributed batch"
            if role == "writer"
            else "another process (it has not named itself yet)"
        )
    else:
        what = "the driver of a distributed batch" if holder[0] == "driver" else "a run"
        who = f"{what}: {holder[1]}"
    if role == "driver" and holder is not None and holder[0] == "driver":
        return (
            f"journal {location} is in use by {who}. A batch has one driver, or both would "
            "enqueue the same chunks: wait for it to finish, or stop it and run again to "
            "resume, or pass another --batch-id"
        )
    return (
        f"journal {location} is in use by {who}. A journal has one writer (or one "
        "distributed batch), or both would send the same requests: wait for it to finish, "
        "or stop it (a lock left by a process that died is released with its connection), "
        "or name another batch"
    )


def _mismatch(location: str, name: str, stored: str | None, wanted: str) -> str:
    if name == "schema":
        return (
            f"journal {location} was written by another version of bridge (schema "
            f"{stored!r}; this version uses {wanted!r}): name a new batch to start over"
        )
    return (
        f"journal {location} was written with {name} {stored!r}, not {wanted!r}; its results "
        "belong to another call. Name another batch (?batch=NAME), or start this one over"
    )
