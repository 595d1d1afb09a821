"""Django settings for the bridge.django tests (installed by conftest.py, not globally)."""

from __future__ import annotations

import os

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "django_tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["bridge.django", "django_tests.notes"]
MIDDLEWARE: list[str] = []

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:", "ATOMIC_REQUESTS": True}
}
#: The alias the PostgreSQL tests use; conftest adds it only when they are to run.
POSTGRES = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": os.environ.get("PGHOST", "127.0.0.1"),
    "PORT": os.environ.get("PGPORT", "5432"),
    "NAME": os.environ.get("PGDATABASE", "test"),
    "USER": os.environ.get("PGUSER", "postgres"),
    "PASSWORD": os.environ.get("PGPASSWORD", ""),
    "ATOMIC_REQUESTS": True,
    # A test database of this run's own: two runs on one shared server must not drop
    # each other's (Django's default name, test_<NAME>, is the same for every run).
    "TEST": {"NAME": f"test_bridge_{os.getpid()}"},
}

BRIDGE = {
    "concurrency": 8,
    "threads": 8,
    "limits": {"http://127.0.0.1:9/v1/": {"rpm": 600, "max_in_flight": 4}},
}
#: Where the streaming view's client points; the tests set it to the llm_server fixture.
LLM_BASE_URL = "http://127.0.0.1:9/v1"
