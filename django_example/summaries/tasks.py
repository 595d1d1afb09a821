"""What a Celery worker runs for ``manage.py summarize_batch``, one document at a time.

The workers import this module at start (``app.autodiscover_tasks()`` finds ``tasks``
modules), and run only what ``@bridge.celery.fanout`` marks. Each outcome is recorded in
the journal, so a rerun of the batch never pays for a document twice.
"""

from __future__ import annotations

from typing import Any

import bridge.celery

from . import llm


@bridge.celery.fanout
async def summarise_for_batch(document: str) -> dict[str, Any]:
    """One document's summary and token usage, on the worker process's bridge."""
    text, usage = await llm.summarise(document)
    return {"summary": text, "usage": usage}
