"""``python -m bridge batch --broker``: drive a batch that a Celery cluster sends.

This process sends no request itself. It reads the input, leaves out the lines the journal
already holds, enqueues the rest in chunk tasks (``bridge.celery``'s fan-out, with the
single-process command's keys, so either can resume the other's batch), waits with one
progress bar counted from the journal, and writes the output in input order from the
journal. If it dies, the chunks already queued still run; the same command resumes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import IO, Any

import bridge
from bridge._integration import Entry, RunCounts, loads, redacted_url
from bridge.celery._fanout import Batch, _submit

from ._distributed import as_item, line_status, make_app, request_item_key, send
from ._output import (
    CONFIG,
    EXIT_FAILED_LINES,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    REFUSALS,
    open_output,
    prices_of,
    refuse,
    start_output,
    write_lines,
)
from ._requests import Request, read_requests
from ._send import Line
from ._summary import Tally, report

__all__ = ["run_on_cluster"]

_GO_ON = (
    "the chunks already queued go on in the workers; run the same command again to "
    "wait for them and write the output"
)


def run_on_cluster(args: argparse.Namespace, journal: str, default_batch_id: str) -> int:
    """Enqueue the lines the journal lacks, wait for the cluster, write the output."""
    opened = open_output(args.output)
    if opened is None:
        return EXIT_USAGE
    out, existed = opened
    with out:
        requests = list(read_requests(args.input))
        if args.store:
            _check_store(args.store)
        try:
            batch = _enqueue(args, journal, args.batch_id or default_batch_id, requests)
        except REFUSALS as exc:
            refuse(args.output, out, existed, exc)
            return EXIT_USAGE
        except _broker_errors() as exc:
            unreachable = ConnectionError(
                f"cannot reach the broker {redacted_url(args.broker)} ({exc}): start it, or "
                "fix --broker; nothing was enqueued that a rerun would not enqueue again"
            )
            refuse(args.output, out, existed, unreachable)
            return EXIT_USAGE
        with batch:
            start_output(args.output, out)
            print(
                f"batch {batch.batch_id}: {batch.pending:,} of {batch.total:,} lines to send, "
                f"in {batch.chunks:,} chunk tasks on queue {args.queue}",
                file=sys.stderr,
            )
            try:
                batch.wait(progress=True)
                return _finish(args, batch, requests, out)
            except KeyboardInterrupt:
                print(f"interrupted: {_GO_ON}", file=sys.stderr)
                return EXIT_INTERRUPTED
            except bridge.JournalUnavailableError as exc:
                print(f"error: {exc}\n{_GO_ON}", file=sys.stderr)
                return EXIT_FAILED_LINES


def _enqueue(
    args: argparse.Namespace, journal: str, batch_id: str, requests: list[Request]
) -> Batch:
    app = make_app(broker=args.broker, journal=journal, queue=args.queue)
    return _submit(send, [as_item(r) for r in requests], app=app, chunk_size=args.chunk_size,
                   journal=journal, batch_id=batch_id, key=request_item_key,
                   retry_failed=args.retry_failed, concurrency=None, queue=args.queue,
                   judge=line_status, config=CONFIG, fresh=not args.resume)  # fmt: skip


def _broker_errors() -> type[Exception]:
    from kombu.exceptions import OperationalError  # noqa: PLC0415 - celery brings kombu

    return OperationalError


def _check_store(url: str) -> None:
    """Warn, before enqueuing, when the store the workers share is not reachable from here."""
    try:
        import redis  # noqa: PLC0415 - the redis extra

        redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable from here"
        print(
            f"warning: the rate-limit store {redacted_url(url)} is unreachable from here "
            f"({type(exc).__name__}); workers that cannot reach it either limit per process "
            "or fail their lines, as their --on-store-error says",
            file=sys.stderr,
        )


def _finish(args: argparse.Namespace, batch: Batch, requests: list[Request], out: IO[str]) -> int:
    for number, error in sorted(batch.failures().items()):
        print(
            f"chunk {number} failed on its worker ({type(error).__name__}: {error}); its "
            "lines without an outcome are written as not sent: run again to send them",
            file=sys.stderr,
        )
    tally, this_run = Tally(), Tally()
    write_lines(_lines(batch, requests, this_run), tally, out)
    reports = [r for r in batch.reports.values() if isinstance(r, dict)]
    counts = RunCounts(replayed=batch.total - batch.pending, run=batch.pending, rerun=batch.again)
    traffic = (_sum(reports, "rate_limited"), _sum(reports, "retries"))
    sent = this_run.lines - this_run.final_causes["invalid_request"]
    report(tally, counts, sent=sent, tokens=this_run.tokens, prices=prices_of(args),
           out=sys.stderr, traffic=traffic)  # fmt: skip
    return EXIT_FAILED_LINES if tally.failed else 0


def _lines(batch: Batch, requests: list[Request], this_run: Tally) -> Iterator[Line]:
    """Every line's latest outcome in input order; those sent this run also go to ``this_run``."""
    for index, (request, entry) in enumerate(zip(requests, batch.entries(), strict=True)):
        line = _line(request, entry)
        if batch.was_pending(index):
            this_run.add(*line)
        yield line


def _line(request: Request, entry: Entry | None) -> Line:
    if entry is not None and entry.value is not None:
        line, status = loads(entry.value)
        return line, status
    error: dict[str, Any]
    if entry is None:
        error = {"code": "not_sent", "message": "its chunk task failed on a worker; run again"}
        return {"custom_id": request.custom_id, "response": None, "error": error}, "retryable"
    error = {"code": entry.error_type, "message": entry.error_message}
    return {"custom_id": request.custom_id, "response": None, "error": error}, entry.status


def _sum(reports: list[dict[str, Any]], name: str) -> int:
    return sum(int(r.get(name, 0)) for r in reports)
