"""The one internal interface of the integrations and tools (layer 3).

``bridge.django``, ``bridge.flask``, ``bridge.celery``, ``bridge.batch``, ``bridge.bench``
and ``bridge.testing`` use the public API (``import bridge``) and, for what users never
call directly, these names and no other private module. A change to what stands here is
a change to the integrations; everything else under ``bridge._*`` may move freely.
"""

from __future__ import annotations

from ._admission._limits import DEFAULT_ATTEMPTS, limits_from_setting
from ._admission._preload import SDKS, preload, sdks_from_setting
from ._core._journal import (
    JournalIterator,
    JournalStore,
    RunCounts,
    Status,
    default_key,
    open_store,
    status_of_exception,
    status_of_http,
    store_for,
)
from ._extras import require

__all__ = [
    "DEFAULT_ATTEMPTS",
    "SDKS",
    "JournalIterator",
    "JournalStore",
    "RunCounts",
    "Status",
    "default_key",
    "limits_from_setting",
    "open_store",
    "preload",
    "require",
    "sdks_from_setting",
    "status_of_exception",
    "status_of_http",
    "store_for",
]
