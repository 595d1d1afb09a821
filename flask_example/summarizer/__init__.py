"""The example app: ``create_app()`` reads its config from the environment.

- ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``: the LLM endpoint. When ``OPENAI_BASE_URL`` is
  unset, ``flask run`` and ``flask summarize`` start the simulated server
  (``bridge.testing``) for you; gunicorn never starts one, it uses OpenAI's API.
- ``SUMMARIZE_CONCURRENCY``: LLM calls one request runs at once (default 10).
- ``FLASK_DEBUG=1``: Flask's debug mode, as Flask itself reads it; off by default.

Everything a worker can inherit happens in ``create_app``: the config is read, the
extension preloads the SDK, and the LLM client is made. Under gunicorn ``--preload`` that
is the master, once, before fork.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from flask import Flask

from bridge.flask import Bridge

from . import cli, llm, views

#: The extension; each app the factory makes gets its own bridge from its config.
llm_bridge = Bridge()


def create_app(**overrides: Any) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        BRIDGE_CONCURRENCY=10,
        BRIDGE_THREADS=16,
        # init_app imports and warms up the SDK this app uses (the default would preload
        # every installed one); under gunicorn --preload, in the master, before fork.
        BRIDGE_PRELOAD=["openai"],
        # Each request's LLM calls must finish within this many seconds (the default,
        # stated for the reader): under gunicorn's default --timeout of 30, a view that
        # cannot answers 503 with Retry-After at once instead of having its worker killed.
        BRIDGE_REQUEST_DEADLINE=25,
        #: The LLM endpoint; None means OpenAI's (or the simulated server, see llm.py).
        LLM_BASE_URL=os.environ.get("OPENAI_BASE_URL") or None,
        LLM_API_KEY=os.environ.get("OPENAI_API_KEY"),
        LLM_MODEL=os.environ.get("LLM_MODEL", "gpt-4o-mini"),
        # Only `flask run`: never at import, in tests, or in gunicorn workers, which
        # must be pointed at an endpoint on purpose.
        SIMULATE_LLM=sys.argv[1:2] == ["run"],
        #: Latency of the simulated server that development starts (seconds per reply).
        SIMULATED_LATENCY=float(os.environ.get("SIMULATED_LATENCY", "0.3")),
        SUMMARIZE_CONCURRENCY=int(os.environ.get("SUMMARIZE_CONCURRENCY", "10")),
        SUMMARIZE_MAX_DOCUMENTS=50,
        SUMMARIZE_MAX_CHARS=20_000,
        SUMMARIZE_MAX_TOKENS=120,
        # Larger bodies get 413, unread. 50 documents of 20,000 characters take at most
        # 4 MB as UTF-8 JSON, 6 MB if every character is a \uXXXX escape.
        MAX_CONTENT_LENGTH=8_000_000,
    )
    app.config.update(overrides)
    llm_bridge.init_app(app)
    llm.setup(app)
    app.register_blueprint(views.blueprint)
    app.cli.add_command(cli.summarize)
    return app
