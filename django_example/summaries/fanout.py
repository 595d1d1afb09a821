"""What a Celery worker runs for ``manage.py summarize_batch``, one document at a time.

It must be importable by the workers (``bridge.celery.map`` sends its import path); its
outcome is recorded in the journal, so a rerun of the batch never pays for it twice.
"""

from __future__ import annotations

from typing import Any

from . import llm


async def summarise_for_batch(document: str) -> dict[str, Any]:
    """One document's summary and token usage, on the worker process's bridge."""
    text, usage = await llm.summarise(document)
    return {"summary": text, "usage": usage}
