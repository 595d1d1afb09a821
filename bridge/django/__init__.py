"""Django integration: ``INSTALLED_APPS += ["bridge.django"]``.

On start-up the app configures the process default bridge from the ``BRIDGE`` setting
and makes it thread-sensitive, so that a coroutine a sync view runs through the bridge
may use the async ORM (``aget``, ``acreate``...) and ``sync_to_async``: those calls run
on the view's own thread, with its database connection and transaction::

    BRIDGE = {
        "concurrency": 10,
        "threads": 32,
        "limits": {"https://api.openai.com/v1": {"rpm": 500, "max_in_flight": 20}},
        "store": "redis://127.0.0.1:6379/0",
    }

``ready()`` also imports and warms up the installed SDKs (``"preload"``: True, the
default, False, or a list such as ``["openai"]``), so that under gunicorn ``--preload``
that happens once, in the master, before fork. A system check reports bad ``BRIDGE``
settings. :func:`openai` builds an ``AsyncOpenAI`` client with the limits configured for
its base URL, and :func:`limits_for` gives those limits for any other client
(``bridge.anthropic(limits=bridge.django.limits_for(url))``).

Add :class:`DeadlineMiddleware` to ``MIDDLEWARE`` to run each request under
``bridge.deadline(BRIDGE["request_deadline"])`` (25 s by default, None for none): a view
whose LLM calls cannot finish in time answers 503 with ``Retry-After`` at once, instead of
running into the server's worker timeout. See docs/django.md.
"""

from __future__ import annotations

from ._middleware import DeadlineMiddleware
from ._settings import limits_for, openai

__all__ = ["DeadlineMiddleware", "limits_for", "openai"]
