"""The project's Celery app: summaries fanned out over workers, each on its own bridge.

Start a worker from django_example/ (it needs the same environment as the web process)::

    celery -A example worker --concurrency 2

``bridge.celery.init_app`` reads the ``CELERY_BRIDGE_*`` settings (Celery's namespace
turns ``CELERY_BRIDGE_STORE`` into ``bridge_store``): with the same Redis store as
``BRIDGE["store"]``, the web tier and the workers share one quota.
"""

from __future__ import annotations

import os

from celery import Celery

import bridge.celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")

app = Celery("example")
app.config_from_object("django.conf:settings", namespace="CELERY")
bridge.celery.init_app(app)
app.autodiscover_tasks()  # summaries/tasks.py: what summarize_batch fans out
