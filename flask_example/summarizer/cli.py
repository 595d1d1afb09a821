"""``flask summarize FILE...``: summarise files (or stdin), with progress on stderr."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from . import llm
from .validation import InvalidRequestError, check_documents


@click.command("summarize")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--concurrency", type=int, default=None, help="Calls at once (default: config).")
@with_appcontext
def summarize(files: tuple[Path, ...], concurrency: int | None) -> None:
    """Summarise each FILE (or, with none, the documents on stdin separated by blank
    lines), concurrently through the bridge. Without OPENAI_BASE_URL it starts the
    simulated LLM server."""
    documents = [f.read_text() for f in files] or read_stdin()
    names = [str(f) for f in files] or [f"stdin #{i + 1}" for i in range(len(documents))]
    try:
        check_documents(documents)
    except InvalidRequestError as exc:
        raise click.UsageError(str(exc)) from exc
    if current_app.config["LLM_BASE_URL"] is None:
        llm.use_simulated_server(current_app._get_current_object())  # type: ignore[attr-defined]
    failed = run(documents, names, concurrency or current_app.config["SUMMARIZE_CONCURRENCY"])
    if failed:
        raise click.ClickException(f"{failed} of {len(documents)} documents failed")


def run(documents: list[str], names: list[str], concurrency: int) -> int:
    start = time.perf_counter()
    results = current_app.extensions["bridge"].imap(
        llm.summarise_indexed(start), enumerate(documents), concurrency=concurrency
    )
    done = []
    with contextlib.closing(results):
        for summary in results:
            done.append(summary)
            click.echo(f"\r{len(done)} done", nl=False, err=True)
    click.echo("", err=True)
    for summary in sorted(done, key=lambda s: s.index):
        text = summary.summary if summary.error is None else f"ERROR {summary.error}"
        click.echo(f"{names[summary.index]}\t{text}")
    usage = llm.total_usage(done)
    click.echo(
        f"{len(documents)} documents in {time.perf_counter() - start:.2f} s, "
        f"{usage['total_tokens']} tokens",
        err=True,
    )
    return sum(1 for s in done if s.error)


def read_stdin() -> list[str]:
    return [d.strip() for d in sys.stdin.read().split("\n\n") if d.strip()]
