"""Run many LLM calls at once from synchronous Python.

One long-lived event loop per process, in a daemon thread, behind a small blocking API::

    import bridge

    answers = bridge.map(summarise, documents, concurrency=10)

See docs/core.md for the whole API.
"""

from __future__ import annotations

from ._bridge import DEFAULT_CANCEL_TIMEOUT, DEFAULT_CONCURRENCY, DEFAULT_THREADS, Bridge
from ._default import (
    gather,
    get_default,
    imap,
    iterate,
    map,
    run,
    set_default,
    syncify,
    to_thread,
)
from ._errors import BridgeClosedError, BridgeError, BridgeWarning, ReentrancyError

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CANCEL_TIMEOUT",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_THREADS",
    "Bridge",
    "BridgeClosedError",
    "BridgeError",
    "BridgeWarning",
    "ReentrancyError",
    "gather",
    "get_default",
    "imap",
    "iterate",
    "map",
    "run",
    "set_default",
    "syncify",
    "to_thread",
]
