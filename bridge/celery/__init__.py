"""Celery integration: one bridge per worker process, and lists fanned out over the workers.

::

    from celery import Celery
    import bridge, bridge.celery

    app = Celery("proj", broker="amqp://guest:guest@127.0.0.1:5672//", backend="rpc://")
    app.conf.bridge_concurrency = 16
    app.conf.bridge_store = "redis://127.0.0.1:6379/0"        # one quota for the cluster
    app.conf.bridge_journal = "postgresql://127.0.0.1/llm"    # for bridge.celery.map
    bridge.celery.init_app(app)

    client = bridge.celery.openai()  # at import time: fine, it connects on first use

    @app.task
    def summarise_all(texts):
        return bridge.map(summarise, texts)   # on this worker process's own bridge

Fan a list out over the workers with :func:`map` (``fn`` marked ``@bridge.celery.fanout``)::

    summaries = bridge.celery.map(summarise, texts, app=app, chunk_size=100)

The settings are ``bridge_concurrency``, ``bridge_threads``, ``bridge_limits`` (base URL
to ``bridge.Limits`` keywords or a ``Limits``), ``bridge_store``, ``bridge_journal`` and
``bridge_preload``; ``init_app`` raises ``ValueError`` listing every bad one. It works under
the prefork, threads, solo and gevent pools. :func:`map` fans a list out over the workers
as chunk tasks recorded in a PostgreSQL journal. See docs/scale-out.md.

Importing ``bridge`` never imports Celery; importing ``bridge.celery`` does not either,
until ``init_app`` or :func:`map` is called.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import bridge

from ._config import CeleryConfig, settings
from ._fanout import CHUNK_TASK, DEFAULT_CHUNK_SIZE, Batch, fanout, map, submit
from ._setup import init_app

if TYPE_CHECKING:
    import anthropic as anthropic_sdk
    import openai as openai_sdk
    from celery import Celery

__all__ = [
    "CHUNK_TASK",
    "DEFAULT_CHUNK_SIZE",
    "Batch",
    "CeleryConfig",
    "anthropic",
    "fanout",
    "init_app",
    "map",
    "openai",
    "settings",
    "submit",
]

_OPENAI_URL = "https://api.openai.com/v1"
_ANTHROPIC_URL = "https://api.anthropic.com"


def openai(*, app: Celery | None = None, **kwargs: Any) -> openai_sdk.AsyncOpenAI:
    """``bridge.openai(**kwargs)`` with the limits the app's config sets for its base URL.

    The base URL is ``base_url``, else ``OPENAI_BASE_URL``, else OpenAI's own. Without a
    ``bridge_limits`` entry for it, the limits are learned, and kept in ``bridge_store``
    when one is set (so every worker, and a web tier with the same store, share them).
    """
    url = kwargs.get("base_url") or os.environ.get("OPENAI_BASE_URL") or _OPENAI_URL
    kwargs.setdefault("limits", settings(app).limits_for(str(url)))
    return bridge.openai(**kwargs)


def anthropic(*, app: Celery | None = None, **kwargs: Any) -> anthropic_sdk.AsyncAnthropic:
    """``bridge.anthropic(**kwargs)`` with the app's limits for its base URL; see :func:`openai`."""
    url = kwargs.get("base_url") or os.environ.get("ANTHROPIC_BASE_URL") or _ANTHROPIC_URL
    kwargs.setdefault("limits", settings(app).limits_for(str(url)))
    return bridge.anthropic(**kwargs)
