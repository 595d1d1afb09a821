"""Run many LLM calls at once from synchronous Python.

One long-lived event loop per process, in a daemon thread, behind a small blocking API::

    import bridge

    answers = bridge.map(summarise, documents, concurrency=10)

See docs/core.md for the whole API.
"""

from __future__ import annotations

from ._admission import all_stats as stats
from ._bridge import DEFAULT_CANCEL_TIMEOUT, DEFAULT_CONCURRENCY, DEFAULT_THREADS, Bridge
from ._clients import anthropic, http_client, openai, wrap
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
from ._errors import (
    BridgeClosedError,
    BridgeError,
    BridgeWarning,
    ForeignLoopError,
    JournalLockedError,
    JournalMismatchError,
    JournalUnavailableError,
    MissingExtraError,
    RateLimitStoreError,
    RecordedError,
    ReentrancyError,
)
from ._iterators import CloseableIterator
from ._limits import LEARN, Limits, Retry
from ._stats import EndpointStats

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CANCEL_TIMEOUT",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_THREADS",
    "LEARN",
    "Bridge",
    "BridgeClosedError",
    "BridgeError",
    "BridgeWarning",
    "CloseableIterator",
    "EndpointStats",
    "ForeignLoopError",
    "JournalLockedError",
    "JournalMismatchError",
    "JournalUnavailableError",
    "Limits",
    "MissingExtraError",
    "RateLimitStoreError",
    "RecordedError",
    "ReentrancyError",
    "Retry",
    "anthropic",
    "gather",
    "get_default",
    "http_client",
    "imap",
    "iterate",
    "map",
    "openai",
    "run",
    "set_default",
    "stats",
    "syncify",
    "to_thread",
    "wrap",
]
