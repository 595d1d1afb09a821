"""Settings for the example project; everything that varies comes from the environment.

- ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``: the LLM endpoint. When ``OPENAI_BASE_URL`` is
  unset, ``manage.py runserver`` and ``manage.py summarize_docs`` start the simulated server
  (``bridge.testing``) for you; gunicorn and uvicorn never start one, they use OpenAI's API.
- ``DATABASE_URL``: ``postgres://user:password@host:port/name`` for PostgreSQL, else SQLite.
- ``SUMMARIZE_CONCURRENCY``: LLM calls one request runs at once (default 10).
- ``BRIDGE_STORE_URL``: a Redis URL; the web tier and the Celery workers share one quota.
- ``CELERY_BROKER_URL``, ``CELERY_QUEUE``, ``BRIDGE_JOURNAL_URL`` (PostgreSQL): for
  ``manage.py summarize_batch`` and its workers (``celery -A example worker``).
- ``METRICS=0``: no ``/metrics`` page (it is on when the ``django-example`` extra's
  OpenTelemetry SDK and Prometheus exporter are installed; see summaries/metrics.py).
- ``DJANGO_DEBUG=1``: Django's debug mode (tracebacks in the browser); off by default, so
  that a server started without it never shows them to the network.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", *os.environ.get("DJANGO_ALLOWED_HOSTS", "").split()]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "bridge.django",
    "summaries",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Each request's LLM calls must finish within BRIDGE["request_deadline"]; a view that
    # cannot answers 503 with Retry-After at once, before gunicorn's --timeout kills it.
    "bridge.django.DeadlineMiddleware",
]
ROOT_URLCONF = "example.urls"
WSGI_APPLICATION = "example.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
STATIC_URL = "static/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def database(url: str | None) -> dict[str, object]:
    """``DATABASES["default"]`` for ``url`` (postgres:// or sqlite:///path), SQLite if None."""
    if not url:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path)}
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"DATABASE_URL must be postgres://... or sqlite:///path, got {url!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


DATABASES = {"default": database(os.environ.get("DATABASE_URL"))}
# No ATOMIC_REQUESTS: a transaction held open across seconds of LLM calls holds its locks
# (on SQLite, the whole database's write lock) and its connection all that time. The views
# write in short transactions before and after the calls instead (see summaries/views.py).
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = {
        # WAL: readers never wait for the writer. Many gunicorn threads write, each for a
        # few milliseconds: explicit transactions take the write lock up front
        # (IMMEDIATE), and a writer waits up to 20 s for it instead of failing at once.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

# "preload": ready() imports and warms up the SDK this project uses (the default would
# preload every installed one); under gunicorn --preload, in the master, before fork.
# "request_deadline": seconds, under gunicorn's default --timeout of 30 (the default, 25,
# stated for the reader); DeadlineMiddleware applies it.
BRIDGE = {"concurrency": 10, "threads": 16, "preload": ["openai"], "request_deadline": 25}
#: A Redis store for the rate limits: the web tier and the Celery workers then share one
#: quota (BRIDGE["store"] here, CELERY_BRIDGE_STORE for the workers).
BRIDGE_STORE_URL = os.environ.get("BRIDGE_STORE_URL") or None
if BRIDGE_STORE_URL:
    BRIDGE["store"] = BRIDGE_STORE_URL

# Celery (example/celery.py): manage.py summarize_batch fans documents out over the workers.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
CELERY_RESULT_BACKEND = "rpc://"  # the command waits for its chunk tasks through the broker
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "summaries")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # a busy process holds no chunk another could run
CELERY_BRIDGE_STORE = BRIDGE_STORE_URL
#: Where each summary's outcome is recorded (PostgreSQL, shared by every worker).
CELERY_BRIDGE_JOURNAL = os.environ.get("BRIDGE_JOURNAL_URL") or None
CELERY_BRIDGE_PRELOAD = ["openai"]

#: The LLM endpoint; None means OpenAI's (or the simulated server, see summaries.apps).
LLM_BASE_URL = os.environ.get("OPENAI_BASE_URL") or None
LLM_API_KEY = os.environ.get("OPENAI_API_KEY")
LLM_MODEL = os.environ.get("LLM_MODEL", "gpt-4o-mini")
#: Latency of the simulated server that development starts (seconds per reply).
SIMULATED_LATENCY = float(os.environ.get("SIMULATED_LATENCY", "0.3"))

SUMMARIZE_CONCURRENCY = int(os.environ.get("SUMMARIZE_CONCURRENCY", "10"))
SUMMARIZE_MAX_DOCUMENTS = 50
SUMMARIZE_MAX_CHARS = 20_000
SUMMARIZE_MAX_TOKENS = 120
#: Larger bodies get 413, unread. 50 documents of 20,000 characters take at most 4 MB as
#: UTF-8 JSON, 6 MB if every character is a \uXXXX escape.
SUMMARIZE_MAX_BODY_BYTES = 8_000_000
DATA_UPLOAD_MAX_MEMORY_SIZE = SUMMARIZE_MAX_BODY_BYTES


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


#: /metrics for Prometheus (summaries/metrics.py): the bridge's calls through OpenTelemetry.
METRICS = os.environ.get("METRICS", "1") == "1" and all(
    installed(m) for m in ("opentelemetry.sdk", "opentelemetry.exporter.prometheus")
)
