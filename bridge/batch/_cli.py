"""``python -m bridge batch requests.jsonl -o results.jsonl``: a resumable JSONL runner."""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import bridge
from bridge._integration import (
    DEFAULT_ATTEMPTS,
    JournalIterator,
    JournalStore,
    Status,
    imap_start,
    is_postgres_url,
    open_store,
    store_for,
)

from ._distributed import DEFAULT_QUEUE
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
from ._requests import read_requests, request_key
from ._send import Line, Sender
from ._summary import Tally, report

__all__ = ["main"]


DESCRIPTION = """\
Send every request in a JSONL file to an OpenAI-compatible API, many at once, under
admission control (rate limits learned from the provider's headers unless you give
--rpm/--tpm; 429s, 5xx and timeouts retried). Each input line gets one output line, in
input order, with that line's latest outcome.

Every outcome is recorded in a journal as it arrives, so a rerun of the same command
sends only what is left: lines never sent, and lines whose last attempt failed in a way a
new attempt may cure (408, 409, 429, 5xx, a timeout, a connection error). Lines that got a
final answer (200, or a client error such as 400, 401, 403, 404, 413 or 422) are not sent
again. One journal has one writer: a second run on it is refused.

With --broker, the lines are split into chunks that the workers started with `python -m
bridge worker` send (on as many machines as you like), recording into a PostgreSQL
journal; this command waits, draws one progress bar for the whole cluster, and writes the
output in input order. A worker killed mid-chunk has its chunk delivered again; a rerun
of this command after it died resumes from the journal.
"""

EPILOG = """\
input lines: a provider Batch API request ({"custom_id", "method": "POST", "url",
"body"}) or a bare request body (sent to /v1/chat/completions). A line that cannot be
sent (invalid UTF-8 or JSON, not an object) becomes an error line; the rest run.

exit status: 0 every line succeeded; 1 some lines failed (see the summary on stderr);
2 bad usage, or refused before sending (the output is the input, the journal is in use);
130 interrupted (rerun to resume).

examples:
  export OPENAI_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=...
  python -m bridge batch requests.jsonl -o results.jsonl --concurrency 50

  python -m bridge batch requests.jsonl -o results.jsonl --broker amqp://host// \
      --journal postgresql://user@db-host/llm --chunk-size 100
"""


def _whole_number(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; {what}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not positive; {what}")
        return value

    return parse


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a price; give a number >= 0, e.g. 0.15")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command's options; every one says its default."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge batch",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keeps the paragraphs
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("input", type=Path, help="the requests, one JSON object per line")
    add(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="where to write the results (JSONL); "
        "rewritten each run from the journal. Required; it may not be the input",
    )
    add(
        "--journal",
        metavar="PATH|URL",
        help="where outcomes are recorded: a SQLite file, or a postgresql:// URL (required "
        "with --broker) (default: the output path plus .journal.sqlite)",
    )
    add(
        "--batch-id",
        metavar="ID",
        help="the batch's name in a PostgreSQL journal (default: a hash of the input's content)",
    )
    add(
        "--store",
        metavar="URL",
        help="a Redis store to share the rate limits through, e.g. redis://host:6379/0; with "
        "--broker the workers' --store is in force, and this one is only checked for "
        "reachability (default: none, limits kept in this process)",
    )
    add(
        "--broker",
        metavar="URL",
        help="run on a Celery cluster: the broker the workers of `python -m bridge worker` "
        "listen on, e.g. amqp://guest:guest@host:5672// (default: run in this process)",
    )
    add(
        "--chunk-size",
        type=_whole_number("give lines per chunk task, e.g. 100"),
        default=100,
        metavar="N",
        help="with --broker: lines per chunk task (default: %(default)s)",
    )
    add(
        "--queue",
        default=DEFAULT_QUEUE,
        metavar="NAME",
        help="with --broker: the queue the workers take chunks from (default: %(default)s)",
    )
    add(
        "--concurrency",
        type=_whole_number("give the most requests in flight, e.g. 50"),
        default=50,
        metavar="N",
        help="requests in flight at once (default: %(default)s)",
    )
    add(
        "--rpm",
        type=_whole_number("give requests per minute, e.g. 3000"),
        metavar="N",
        help="requests per minute (default: learned from the provider's rate-limit headers)",
    )
    add(
        "--tpm",
        type=_whole_number("give tokens per minute, e.g. 1000000"),
        metavar="N",
        help="tokens per minute (default: learned from the provider's rate-limit headers)",
    )
    add(
        "--attempts",
        type=_whole_number("give tries per request, e.g. 6 (1 turns retries off)"),
        default=DEFAULT_ATTEMPTS,
        metavar="N",
        help="tries per request within a run, the first included; what is still failing "
        "retryably after them is left for a rerun (default: %(default)s)",
    )
    add(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL"),
        metavar="URL",
        help="the API's base URL, e.g. https://api.openai.com/v1 (default: $OPENAI_BASE_URL)",
    )
    add(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY"),
        metavar="KEY",
        help="the API key (default: $OPENAI_API_KEY; prefer it: a key on the command line "
        "is visible to other users of the machine)",
    )
    add(
        "--completion-order",
        action="store_true",
        help="write lines as they finish (default: in input order)",
    )
    add(
        "--retry-failed",
        action="store_true",
        help="also send lines again whose last outcome "
        "was a final failure, e.g. after fixing an API key that got 401s (default: off)",
    )
    add(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="discard the journal and send every line again (default: resume from the journal)",
    )
    add(
        "--price-in",
        type=_price,
        metavar="PRICE",
        help="price per 1M input tokens, for a cost estimate (default: no estimate)",
    )
    add(
        "--price-out",
        type=_price,
        metavar="PRICE",
        help="price per 1M output tokens; give both prices (default: no estimate)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.price_in is None) != (args.price_out is None):
        parser.error("give both --price-in and --price-out, or neither")
    journal = args.journal or f"{args.output}.journal.sqlite"
    problem = _refusal(args, journal)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.broker:
        from ._cluster import run_on_cluster  # noqa: PLC0415 - imports celery

        return run_on_cluster(args, journal, input_batch_id(args.input))
    return _locked_run(args, journal)


def input_batch_id(path: Path) -> str:
    """The default batch id: a hash of the input file's bytes, so the same input resumes."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return f"input-{digest.hexdigest()[:32]}"


def _refusal(args: argparse.Namespace, journal: str) -> str | None:
    """Why the command must not start, checked before anything is opened for writing."""
    if not args.input.is_file():
        return f"input file {args.input} does not exist"
    if args.broker and not is_postgres_url(journal):
        return (
            "--broker needs a journal every worker can write: pass --journal "
            "postgresql://user@host/db"
        )
    if not args.broker and not args.base_url:
        return "pass --base-url or set OPENAI_BASE_URL"
    if is_postgres_url(journal):
        return _output_is_input(args)
    if args.batch_id:
        return (
            "--batch-id names a batch in a PostgreSQL journal, but a SQLite journal file holds "
            "one batch: drop --batch-id, or pass --journal postgresql://..."
        )
    return _output_is_input(args, journal)


def _output_is_input(args: argparse.Namespace, journal: str | None = None) -> str | None:
    suffixes = ("", "-wal", "-shm", ".lock") if journal is not None else ()
    journal_files = [Path(f"{journal}{suffix}") for suffix in suffixes]
    for path, what in ((args.output, "output"), *((p, "journal") for p in journal_files)):
        if _same_file(path, args.input):
            return (
                f"the {what} {path} is the input file {args.input}; writing it would destroy "
                f"the input: pass another {'-o' if what == 'output' else '--journal'} path"
            )
    if any(_same_file(args.output, path) for path in journal_files):
        return f"the output {args.output} is the journal {journal}: pass another -o path"
    return None


def _same_file(a: Path, b: Path) -> bool:
    """The same path, or the same file through a hard or symbolic link."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # same st_dev and st_ino
    except OSError:
        return False


def _locked_run(args: argparse.Namespace, journal: str) -> int:
    opened = open_output(args.output)
    if opened is None:
        return EXIT_USAGE
    out, existed = opened
    with out:
        batch_id = args.batch_id or input_batch_id(args.input)
        store = store_for(journal, default_batch=batch_id)
        try:
            open_store(store, CONFIG, fresh=not args.resume)
        except REFUSALS as exc:
            refuse(args.output, out, existed, exc)
            return EXIT_USAGE
        start_output(args.output, out)
        return _run(args, store, out)


def _run(args: argparse.Namespace, store: JournalStore, out: IO[str]) -> int:
    # Limits left out are learned from the provider's headers, as bridge.openai() does.
    rates = {name: getattr(args, name) for name in ("rpm", "tpm") if getattr(args, name)}
    limits = bridge.Limits(max_in_flight=args.concurrency, store=args.store, **rates)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    retry = bridge.Retry(attempts=args.attempts)
    client = bridge.http_client(limits=limits, retry=retry, headers=headers)
    sender = Sender(client, args.base_url)
    start = imap_start(
        bridge.get_default(), concurrency=args.concurrency, ordered=not args.completion_order
    )
    with bridge.priority("batch"):  # the context imap copies: every request is batch
        results = JournalIterator(
            start,
            sender,
            read_requests(args.input),
            store=store,
            key=request_key,
            retry_failed=args.retry_failed,
            return_exceptions=False,
            judge=_status,
        )
    tally = Tally()
    try:
        write_lines(results, tally, out)
    except KeyboardInterrupt:
        out.flush()
        print(
            f"interrupted: {tally.lines:,} lines written; rerun to resume from {store.location}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        results.close()
    prices = prices_of(args)
    report(tally, results.counts, sent=sender.posted, tokens=sender.tokens, prices=prices,
           out=sys.stderr)  # fmt: skip
    return EXIT_FAILED_LINES if tally.failed else 0


def _status(result: Line) -> Status:
    return result[1]
