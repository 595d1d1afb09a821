"""``init_app``: one bridge per worker process, started after fork and closed at shutdown.

Celery's pools run tasks in different places, and each gets its bridge where its tasks run:

- prefork: in every child, at ``worker_process_init`` (after the fork, so no loop thread
  or connection crosses it), closed at ``worker_process_shutdown``. A child leaves through
  ``os._exit``, which skips ``atexit``: without that signal its bridge would never close.
- solo, threads and gevent: in the worker process itself, at ``worker_init``, closed at
  ``worker_shutdown``. Under threads every task thread shares it; under gevent its loop
  runs on a real OS thread and each greenlet waits cooperatively. (Celery sets its logging
  up after ``worker_init``, so the start is logged at ``worker_ready``.)

The bridge becomes the process default, so ``bridge.map/run/imap`` and ``bridge.openai()``
clients made anywhere (at import time too) use it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import bridge
from bridge._integration import preload, set_process_lane

from ._config import KEYS, CeleryConfig, config_of, read_config, remember
from ._fanout import register

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["init_app"]

logger = logging.getLogger("bridge.celery")

_lock = threading.Lock()
# The worker's config (set at worker_init, inherited by prefork children) and the bridge
# of this process, with the pid it was made in.
_worker_config: CeleryConfig | None = None
_current: tuple[int, bridge.Bridge] | None = None


def init_app(
    app: Celery,
    *,
    concurrency: int | None = None,
    threads: int | None = None,
    limits: dict[str, Any] | None = None,
    store: str | None = None,
    journal: str | None = None,
    preload: object = None,
    lane: str | None = None,
) -> CeleryConfig:
    """Give every worker process of ``app`` its own bridge, and register the fan-out task.

    Keywords that are passed are written into ``app.conf`` (``bridge_concurrency``,
    ``bridge_threads``, ``bridge_limits``, ``bridge_store``, ``bridge_journal``,
    ``bridge_preload``, ``bridge_lane``); the rest are read from it. Call it where the app
    is made, so the web processes that enqueue tasks and the workers that run them see one
    config.

    Returns:
        The checked settings (also :func:`bridge.celery.settings`).

    Raises:
        ValueError: a ``bridge_*`` setting is invalid; the message lists every problem.
    """
    given = {"concurrency": concurrency, "threads": threads, "limits": limits, "store": store,
             "journal": journal, "preload": preload, "lane": lane}  # fmt: skip
    for name, value in given.items():
        if value is not None:
            app.conf[KEYS[name]] = value
    config = read_config(app.conf)
    remember(app, config)
    register(app)
    _connect_signals()
    return config


# -- the worker's signals -----------------------------------------------------------------


def _connect_signals() -> None:
    from celery import signals  # noqa: PLC0415 - celery is an optional dependency

    # Celery's signals are process-wide; connecting the same receivers again is a no-op.
    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="bridge-init")
    signals.worker_ready.connect(_on_ready, weak=False, dispatch_uid="bridge-ready")
    signals.worker_process_init.connect(_on_process, weak=False, dispatch_uid="bridge-proc")
    signals.worker_process_shutdown.connect(_on_exit, weak=False, dispatch_uid="bridge-pexit")
    signals.worker_shutdown.connect(_on_exit, weak=False, dispatch_uid="bridge-exit")


def _on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    global _worker_config  # noqa: PLW0603 - one worker per process, by Celery's design
    app = getattr(sender, "app", None)
    config = None if app is None else config_of(app)
    if config is None:
        return  # a worker of an app without init_app
    _worker_config = config
    # Once in the worker, before any fork: every prefork child inherits the warm SDKs.
    preload(config.preload)
    if not _forks(sender):  # prefork's children each start their own instead
        _start(config, log=False)


def _forks(worker: Any) -> bool:
    from celery.concurrency import get_implementation  # noqa: PLC0415 - optional dependency

    return "prefork" in get_implementation(worker.pool_cls).__module__


def _on_ready(**kwargs: Any) -> None:
    if _current is not None and _current[0] == os.getpid():
        logger.info("bridge ready in worker process %d", _current[0])


def _on_process(**kwargs: Any) -> None:
    if _worker_config is not None:
        _start(_worker_config)


def _on_exit(**kwargs: Any) -> None:
    global _current
    with _lock:
        mine, _current = _current, None
    if mine is None or mine[0] != os.getpid():
        return
    mine[1].close()
    logger.info("bridge closed in worker process %d", mine[0])


def _start(config: CeleryConfig, *, log: bool = True) -> None:
    global _current  # noqa: PLW0603 - the process's own bridge
    pid = os.getpid()
    with _lock:
        if _current is not None and _current[0] == pid:
            return  # solo sends worker_process_init in the process worker_init started
        made = bridge.Bridge(
            concurrency=config.concurrency, threads=config.threads, name="celery-bridge"
        )
        _current = (pid, made)
    # A forked child's inherited default belongs to the parent; it is dropped, untouched.
    bridge.set_default(made)
    set_process_lane(config.lane)
    if log:
        logger.info("bridge ready in worker process %d", pid)
