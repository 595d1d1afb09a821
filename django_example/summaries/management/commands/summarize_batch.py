"""``manage.py summarize_batch FILE...``: summarise on the Celery workers, with progress.

The documents are fanned out over the workers of ``example.celery`` in chunk tasks
(``bridge.celery.submit``); each outcome lands in the PostgreSQL journal as it completes,
and the command counts them from there, so its progress covers the whole cluster. Rerun
it with the same files and it sends only what the journal lacks.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

import bridge
import bridge.celery
from summaries import tasks

from .summarize_docs import read


class Command(BaseCommand):
    help = (
        "Summarise each FILE (or, with none, the documents on stdin separated by blank "
        "lines) on the Celery workers (celery -A example worker), showing the progress of "
        "the whole batch. Needs CELERY_BROKER_URL and BRIDGE_JOURNAL_URL (PostgreSQL)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="*", type=Path)
        parser.add_argument("--chunk-size", type=int, default=20, help="documents per task")
        parser.add_argument("--batch-id", help="the batch's name (default: a hash of the input)")

    def handle(self, *args: object, files: list[Path], chunk_size: int, batch_id: str | None,
               **options: object) -> None:  # fmt: skip
        documents = read(files)
        if not documents:
            raise CommandError("no documents: pass FILE... or documents on stdin")
        if not settings.CELERY_BRIDGE_JOURNAL:
            raise CommandError("set BRIDGE_JOURNAL_URL to a PostgreSQL URL the workers share")
        from example.celery import app  # noqa: PLC0415 - only this command needs Celery

        names = [str(f) for f in files] or [f"stdin #{i + 1}" for i in range(len(documents))]
        with bridge.celery.submit(tasks.summarise_for_batch, documents, app=app,
                                  chunk_size=chunk_size, batch_id=batch_id) as batch:  # fmt: skip
            self.stderr.write(
                f"batch {batch.batch_id}: {batch.pending} of {batch.total} documents queued "
                f"in {batch.chunks} tasks"
            )
            batch.wait(on_progress=self.show)
            self.stderr.write("")
            results = batch.results(return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            text = f"ERROR {result}" if isinstance(result, Exception) else result["summary"]
            self.stdout.write(f"{name}\t{text}")
        failed = sum(isinstance(r, Exception) for r in results)
        if failed:
            raise CommandError(f"{failed} of {len(documents)} documents failed")

    def show(self, done: int, total: int) -> None:
        self.stderr.write(f"\r{done}/{total} documents done", ending="")
        self.stderr.flush()
