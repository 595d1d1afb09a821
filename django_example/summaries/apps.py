"""The summaries app: makes the LLM client at start-up; in development it starts the
simulated LLM server for you first."""

from __future__ import annotations

import atexit
import os
import sys

from django.apps import AppConfig
from django.conf import settings


class SummariesConfig(AppConfig):
    name = "summaries"

    def ready(self) -> None:
        from . import llm, metrics  # noqa: PLC0415 - app modules load once the registry is ready

        if settings.METRICS:
            metrics.setup()
        # Only `manage.py runserver` without OPENAI_BASE_URL: never at import, in tests,
        # or in gunicorn/uvicorn workers, which must be pointed at an endpoint on purpose.
        if settings.LLM_BASE_URL is None and serving_for_development(sys.argv):
            use_simulated_server()
        # Made now, not on the first request: under gunicorn --preload this runs in the
        # master, so no worker pays for it (bridge.django has preloaded the SDK already).
        # Without a key the SDK refuses to make one: then the first request says so, and
        # commands such as migrate still run.
        if settings.LLM_API_KEY:
            llm.client()


def serving_for_development(argv: list[str]) -> bool:
    """True in the process that runserver serves requests from."""
    if len(argv) < 2 or argv[1] != "runserver":
        return False
    # The autoreloader's parent only watches files; its child (RUN_MAIN) serves.
    return os.environ.get("RUN_MAIN") == "true" or "--noreload" in argv


def use_simulated_server() -> None:
    """Start ``bridge.testing``'s server for this process and point the LLM settings at it."""
    from bridge.testing import serve  # noqa: PLC0415 - only development needs aiohttp's server

    from . import llm  # noqa: PLC0415 - app modules load once the app registry is ready

    server = serve(latency=settings.SIMULATED_LATENCY)
    atexit.register(server.close)
    settings.LLM_BASE_URL = server.base_url
    settings.LLM_API_KEY = settings.LLM_API_KEY or "simulated"
    llm.client.cache_clear()  # a client made before pointed at OpenAI's API
    print(
        f"Simulated LLM server at {server.base_url} (set OPENAI_BASE_URL to use a real one)",
        file=sys.stderr,
    )
