"""``python -m bridge batch requests.jsonl -o results.jsonl``: a resumable JSONL runner."""

from __future__ import annotations

import argparse
import functools
import json
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
    open_store,
    store_for,
)

from ._requests import KEY_SCHEME, read_requests, request_key
from ._send import Line, Sender
from ._summary import Prices, Tally, report

__all__ = ["main"]

EXIT_FAILED_LINES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: The journal's record of which command wrote it (checked on reuse).
FUNCTION = "python -m bridge batch"

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
"""

EPILOG = """\
input lines: a provider Batch API request ({"custom_id", "method": "POST", "url",
"body"}) or a bare request body (sent to /v1/chat/completions). A line that cannot be
sent (invalid UTF-8 or JSON, not an object) becomes an error line; the rest run.

exit status: 0 every line succeeded; 1 some lines failed (see the summary on stderr);
2 bad usage, or refused before sending (the output is the input, the journal is in use);
130 interrupted (rerun to resume).

example:
  export OPENAI_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=...
  python -m bridge batch requests.jsonl -o results.jsonl --concurrency 50
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
        type=Path,
        metavar="PATH",
        help="where outcomes are recorded (default: the output path plus .journal.sqlite)",
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
    journal = args.journal or Path(f"{args.output}.journal.sqlite")
    problem = _refusal(args, journal)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return _locked_run(args, journal)


def _refusal(args: argparse.Namespace, journal: Path) -> str | None:
    """Why the command must not start, checked before anything is opened for writing."""
    if not args.input.is_file():
        return f"input file {args.input} does not exist"
    if not args.base_url:
        return "pass --base-url or set OPENAI_BASE_URL"
    journal_files = [Path(f"{journal}{suffix}") for suffix in ("", "-wal", "-shm", ".lock")]
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


def _locked_run(args: argparse.Namespace, journal: Path) -> int:
    existed = args.output.exists()
    try:
        # Append mode: checks that the output can be written without truncating it, in
        # case another run holds the journal and is writing this file.
        out = args.output.open("a", encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write the output {args.output}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with out:
        store = store_for(journal)
        try:
            open_store(
                store, {"function": FUNCTION, "key_scheme": KEY_SCHEME}, fresh=not args.resume
            )
        except (bridge.JournalLockedError, bridge.JournalMismatchError, OSError) as exc:
            out.close()
            if not existed:
                args.output.unlink(missing_ok=True)
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.output.is_file():  # not a pipe or a device such as /dev/stdout
            out.truncate(0)
        return _run(args, store, out)


def _run(args: argparse.Namespace, store: JournalStore, out: IO[str]) -> int:
    # Limits left out are learned from the provider's headers, as bridge.openai() does.
    rates = {name: getattr(args, name) for name in ("rpm", "tpm") if getattr(args, name)}
    limits = bridge.Limits(max_in_flight=args.concurrency, **rates)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    retry = bridge.Retry(attempts=args.attempts)
    client = bridge.http_client(limits=limits, retry=retry, headers=headers)
    sender = Sender(client, args.base_url)
    start = functools.partial(
        bridge.imap, concurrency=args.concurrency, ordered=not args.completion_order
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
        _write(results, tally, out)
    except KeyboardInterrupt:
        out.flush()
        print(
            f"interrupted: {tally.lines:,} lines written; rerun to resume from {store.location}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        results.close()
    prices = None if args.price_in is None else Prices(args.price_in, args.price_out)
    report(tally, results.counts, sender, prices, sys.stderr)
    return EXIT_FAILED_LINES if tally.failed else 0


def _status(result: Line) -> Status:
    return result[1]


def _write(results: JournalIterator, tally: Tally, out: IO[str]) -> None:
    for line, status in results:
        out.write(json.dumps(line) + "\n")
        tally.add(line, status)
        error = line["error"]
        if error is not None and error["code"] == "invalid_request":
            print(f"skipped: {error['message']}", file=sys.stderr)
