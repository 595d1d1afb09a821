"""The one internal interface of the integrations and tools (layer 3).

``bridge.django``, ``bridge.flask``, ``bridge.celery``, ``bridge.batch``, ``bridge.bench``
and ``bridge.testing`` use the public API (``import bridge``) and, for what users never
call directly, these names and no other private module. A change to what stands here is
a change to the integrations; everything else under ``bridge._*`` may move freely.
"""

from __future__ import annotations

from ._admission._limits import DEFAULT_ATTEMPTS, limits_from_setting, limits_setting_problems
from ._admission._observe import CallInfo, Watch, Watcher, add_watcher, remove_watcher
from ._admission._preload import SDKS, preload, sdks_from_setting
from ._core._journal import (
    DEFAULT_KEY_SCHEME,
    Entry,
    JournalIterator,
    JournalStore,
    RunCounts,
    Status,
    default_key,
    dumps,
    imap_start,
    loads,
    open_store,
    qualified_name,
    status_of_exception,
    status_of_http,
    store_for,
)
from ._core._journal._postgres import PostgresStore, is_postgres_url, redacted_url
from ._core._progress import Progress, wanted
from ._core._scope import LANES, Lane, set_process_lane, time_left
from ._extras import require
from ._request_deadline import (
    DEFAULT_REQUEST_DEADLINE,
    DEFAULT_RETRY_AFTER,
    deadline_error,
    deadline_problem,
    deadline_reply,
)

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_KEY_SCHEME",
    "DEFAULT_REQUEST_DEADLINE",
    "DEFAULT_RETRY_AFTER",
    "LANES",
    "SDKS",
    "CallInfo",
    "Entry",
    "JournalIterator",
    "JournalStore",
    "Lane",
    "PostgresStore",
    "Progress",
    "RunCounts",
    "Status",
    "Watch",
    "Watcher",
    "add_watcher",
    "deadline_error",
    "deadline_problem",
    "deadline_reply",
    "default_key",
    "dumps",
    "imap_start",
    "is_postgres_url",
    "limits_from_setting",
    "limits_setting_problems",
    "loads",
    "open_store",
    "preload",
    "qualified_name",
    "redacted_url",
    "remove_watcher",
    "require",
    "sdks_from_setting",
    "set_process_lane",
    "status_of_exception",
    "status_of_http",
    "store_for",
    "time_left",
    "wanted",
]
