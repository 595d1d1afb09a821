"""Run many LLM calls at once from synchronous Python.

One long-lived event loop per process, in a daemon thread, behind a small blocking API::

    import bridge

    answers = bridge.map(summarise, documents, concurrency=10)

See docs/core.md for the whole API.
"""

from __future__ import annotations

from ._admission import (
    LEARN,
    EndpointStats,
    Limits,
    Retry,
    anthropic,
    http_client,
    openai,
    stats,
    wrap,
)
from ._core import (
    DEFAULT_CANCEL_TIMEOUT,
    DEFAULT_CONCURRENCY,
    DEFAULT_THREADS,
    Bridge,
    CloseableIterator,
    deadline,
    gather,
    get_default,
    imap,
    iterate,
    map,
    priority,
    run,
    set_default,
    syncify,
    to_thread,
)
from ._errors import (
    BridgeClosedError,
    BridgeError,
    BridgeWarning,
    DeadlineExceeded,
    ForeignLoopError,
    JournalLockedError,
    JournalMismatchError,
    JournalUnavailableError,
    MissingExtraError,
    RateLimitStoreError,
    RecordedError,
    ReentrancyError,
)

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
    "DeadlineExceeded",
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
    "deadline",
    "gather",
    "get_default",
    "http_client",
    "imap",
    "iterate",
    "map",
    "openai",
    "priority",
    "run",
    "set_default",
    "stats",
    "syncify",
    "to_thread",
    "wrap",
]


def _at_home() -> None:
    # Public names print as bridge.Bridge, not bridge._core._bridge.Bridge: in reprs,
    # tracebacks and help(), where users look. (httpx does the same.)
    for name in __all__:
        value = globals()[name]
        if getattr(value, "__module__", "").startswith("bridge._"):
            value.__module__ = "bridge"


_at_home()
