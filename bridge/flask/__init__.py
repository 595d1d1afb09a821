"""Flask integration: ``Bridge(app)``, or ``bridge_ext.init_app(app)`` in a factory.

::

    from bridge.flask import Bridge

    app = Flask(__name__)
    app.config["BRIDGE_CONCURRENCY"] = 10
    app.config["BRIDGE_LIMITS"] = {"https://api.openai.com/v1": {"rpm": 500}}
    llm = Bridge(app)

    @app.post("/summaries")
    def summaries():
        return {"summaries": llm.map(summarise, request.json["documents"])}

The config keys are ``BRIDGE_CONCURRENCY``, ``BRIDGE_THREADS``, ``BRIDGE_LIMITS`` (base
URL to ``bridge.Limits`` keywords or a ``Limits``), ``BRIDGE_STORE`` and
``BRIDGE_PRELOAD`` (the SDKs ``init_app`` imports and warms up: True, the default, for
every installed one) and ``BRIDGE_REQUEST_DEADLINE`` (seconds each request's bridge calls
must finish in, 25 by default, None for none; a view that cannot answers 503 with
``Retry-After``); ``init_app`` raises ``ValueError`` listing every bad one. See
docs/flask.md.
"""

from __future__ import annotations

from ._config import BridgeConfig
from ._extension import Bridge

__all__ = ["Bridge", "BridgeConfig"]
