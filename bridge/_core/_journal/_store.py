"""Where a journal keeps its outcomes: the small interface every store implements.

A store is used in this order, from one thread::

    store.lock()                  # become the only writer, or JournalLockedError
    store.open(config)            # create, or check the config; JournalMismatchError
    store.lookup(key) / store.record(key, entry) ...
    store.close()                 # release the lock and the connection (idempotent)

The SQLite store (``_sqlite.py``) locks a sidecar file with ``flock``, which the kernel
releases when the process dies, so a crashed run never leaves the journal locked. The
PostgreSQL store (``_postgres.py``) keeps journals shared between machines: one table for
every batch, session-level advisory locks (which the server releases when the holder's
connection dies), and the holder's details in a row next to them. It also lets the many
workers of a distributed batch write one batch at once, one chunk each.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ._outcomes import Status

__all__ = ["Entry", "Holder", "JournalStore"]


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One item's latest outcome.

    ``value`` is the result as JSON text (``_codec.dumps``) when ``fn`` returned;
    ``error_type``/``error_message`` describe the exception when it raised.
    """

    status: Status
    value: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    finished: float = field(default_factory=time.time)


class JournalStore(Protocol):
    """The storage behind a journal; see the module docstring for the order of calls."""

    #: Where the journal lives, for messages (a path, or a URL without its password).
    location: str

    def lock(self) -> None:
        """Become the journal's only writer.

        Raises:
            JournalLockedError: another process holds it; the message names it.
        """

    def open(self, config: Mapping[str, str], *, fresh: bool = False) -> None:
        """Connect, create what is missing, and check ``config`` against the stored one.

        ``fresh`` discards every recorded outcome first. Called with the lock held.

        Raises:
            JournalMismatchError: the journal was written with another config.
        """

    def lookup(self, key: str) -> Entry | None:
        """The latest outcome recorded for ``key``, or None."""

    def record(self, key: str, entry: Entry) -> None:
        """Record ``entry`` as ``key``'s latest outcome, durably, before returning."""

    def close(self) -> None:
        """Release the lock and the connection; what was recorded stays."""


@dataclass(frozen=True, kw_only=True)
class Holder:
    """Who holds a journal's lock: enough for a person to find that process."""

    pid: int
    host: str
    started: float

    @classmethod
    def me(cls) -> Holder:
        return cls(pid=os.getpid(), host=socket.gethostname(), started=time.time())

    def dumps(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "started": self.started})

    @classmethod
    def loads(cls, text: str) -> Holder | None:
        """The holder a lock file names; None when it names none (or garbage)."""
        try:
            data = json.loads(text)
            return cls(pid=int(data["pid"]), host=str(data["host"]), started=float(data["started"]))
        except (ValueError, TypeError, KeyError):
            return None

    def __str__(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.started))
        return f"pid {self.pid} on host {self.host}, started {since}"
