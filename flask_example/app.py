"""The WSGI entry point: ``flask run`` finds ``app`` here; ``gunicorn app:app``."""

from __future__ import annotations

from summarizer import create_app

app = create_app()
