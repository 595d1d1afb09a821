"""WSGI entry point: ``gunicorn --worker-class gthread --workers 4 --preload example.wsgi``.

Everything a worker can inherit is done here, at import: ``django.setup()`` reads the
settings, ``bridge.django`` preloads the SDK, the summaries app makes its LLM client, and
the URLconf (with the views) is loaded, which Django would otherwise do on each worker's
first request. Under ``--preload`` that is the master, once, before fork.
"""

import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
application = get_wsgi_application()
get_resolver().url_patterns  # noqa: B018 - loads the URLconf and the views
