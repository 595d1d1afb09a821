"""Layer 1, the loop and the facade: one event loop per process behind blocking calls.

``Bridge`` owns a loop thread (``_runner``) and a bounded thread pool (``_threads``);
calls cross to the loop one at a time (``_calls``) through one narrow interface
(``Submitter``), which the iterators (``_iterators``) use as well. ``map``/``imap`` options
that change what comes back (``journal=``, ``progress=``) are wrappers around what
``imap`` returns (``_journal``, ``_progress``). Nothing here knows about LLMs or HTTP.
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
from ._iterators import CloseableIterator
from ._scope import deadline, priority

__all__ = [
    "DEFAULT_CANCEL_TIMEOUT",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_THREADS",
    "Bridge",
    "CloseableIterator",
    "deadline",
    "gather",
    "get_default",
    "imap",
    "iterate",
    "map",
    "priority",
    "run",
    "set_default",
    "syncify",
    "to_thread",
]
