"""``manage.py summarize_docs FILE...``: summarise files (or stdin), with progress on stderr."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

import bridge
from summaries import llm
from summaries.apps import use_simulated_server
from summaries.validation import InvalidRequestError, check_documents


class Command(BaseCommand):
    help = (
        "Summarise each FILE (or, with none, the documents on stdin separated by blank "
        "lines), concurrently through the bridge. Without OPENAI_BASE_URL it starts the "
        "simulated LLM server."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="*", type=Path)
        parser.add_argument("--concurrency", type=int, default=settings.SUMMARIZE_CONCURRENCY)

    def handle(self, *args: object, files: list[Path], concurrency: int, **options: object) -> None:
        documents = read(files)
        names = [str(f) for f in files] or [f"stdin #{i + 1}" for i in range(len(documents))]
        try:
            check_documents(documents)
        except InvalidRequestError as exc:
            raise CommandError(str(exc)) from exc
        if settings.LLM_BASE_URL is None:
            use_simulated_server()
        failed = self.summarise(documents, names, concurrency)
        if failed:
            raise CommandError(f"{failed} of {len(documents)} documents failed")

    def summarise(self, documents: list[str], names: list[str], concurrency: int) -> int:
        start = time.perf_counter()
        one = llm.summarise_indexed(start)
        results = sorted(
            self.progress(bridge.imap(one, enumerate(documents), concurrency=concurrency)),
            key=lambda s: s.index,
        )
        for summary in results:
            text = summary.summary if summary.error is None else f"ERROR {summary.error}"
            self.stdout.write(f"{names[summary.index]}\t{text}")
        usage = llm.total_usage(results)
        self.stderr.write(
            f"{len(documents)} documents in {time.perf_counter() - start:.2f} s, "
            f"{usage['total_tokens']} tokens"
        )
        return sum(1 for s in results if s.error)

    def progress(self, results: bridge.CloseableIterator[llm.Summary]) -> list[llm.Summary]:
        done = []
        with contextlib.closing(results):
            for summary in results:
                done.append(summary)
                self.stderr.write(f"\r{len(done)} done", ending="")
                self.stderr.flush()
        self.stderr.write("")
        return done


def read(files: list[Path]) -> list[str]:
    if not files:
        return [d.strip() for d in sys.stdin.read().split("\n\n") if d.strip()]
    try:
        return [f.read_text() for f in files]
    except OSError as exc:
        raise CommandError(f"cannot read {exc.filename}: {exc.strerror}") from exc
