"""A gunicorn config for the e2e tests: each worker records the modules it imports late.

After each request a worker writes ``$IMPORTS_AFTER_FORK_DIR/<pid>.json``: the modules
imported since it was forked (``after_fork``), and since it finished loading the app
(``after_app``, the same under ``--preload``). The tests read those files to check that
the SDK and its HTTP stack were imported before fork (``--preload``), or at least before
the worker's first request.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

_at_fork: set[str] = set()
_at_app: set[str] = set()


def post_fork(server: Any, worker: Any) -> None:
    _at_fork.update(sys.modules)


def post_worker_init(worker: Any) -> None:
    _at_app.update(sys.modules)


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    now = set(sys.modules)
    record = {"after_fork": sorted(now - _at_fork), "after_app": sorted(now - _at_app)}
    out = Path(os.environ["IMPORTS_AFTER_FORK_DIR"]) / f"{os.getpid()}.json"
    out.write_text(json.dumps(record))
