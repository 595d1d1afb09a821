"""What the batch command's local and cluster runs share: exit statuses, the journal's
record of the command, and the output file (opened without truncating, emptied once the
run holds the journal, written line by line)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import bridge

from ._requests import KEY_SCHEME
from ._send import Line
from ._summary import Prices, Tally

__all__ = [
    "CONFIG",
    "EXIT_FAILED_LINES",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "FUNCTION",
    "REFUSALS",
    "open_output",
    "prices_of",
    "refuse",
    "start_output",
    "write_lines",
]

EXIT_FAILED_LINES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: The journal's record of which command wrote it (checked on reuse).
FUNCTION = "python -m bridge batch"
CONFIG = {"function": FUNCTION, "key_scheme": KEY_SCHEME}

#: What keeps a run from starting once the output is open: the journal is held by another
#: run, was written by another command, or cannot be reached.
REFUSALS = (bridge.JournalLockedError, bridge.JournalMismatchError, OSError)


def open_output(path: Path) -> tuple[IO[str], bool] | None:
    """The output opened to append, and whether it existed; None if it cannot be written.

    Append mode: checks that the output can be written without truncating it, in case
    another run holds the journal and is writing this file.
    """
    existed = path.exists()
    try:
        return path.open("a", encoding="utf-8"), existed
    except OSError as exc:
        print(f"error: cannot write the output {path}: {exc}", file=sys.stderr)
        return None


def start_output(path: Path, out: IO[str]) -> None:
    """Empty the output, now that this run holds the journal."""
    if path.is_file():  # not a pipe or a device such as /dev/stdout
        out.truncate(0)


def refuse(path: Path, out: IO[str], existed: bool, exc: BaseException) -> None:
    """Report why the run cannot start, leaving no output file behind that it created."""
    out.close()
    if not existed:
        path.unlink(missing_ok=True)
    print(f"error: {exc}", file=sys.stderr)


def prices_of(args: argparse.Namespace) -> Prices | None:
    return None if args.price_in is None else Prices(args.price_in, args.price_out)


def write_lines(results: Iterable[Line], tally: Tally, out: IO[str]) -> None:
    """Write each line of ``results`` to ``out``, counting it in ``tally``."""
    for line, status in results:
        out.write(json.dumps(line) + "\n")
        tally.add(line, status)
        error = line["error"]
        if error is not None and error["code"] == "invalid_request":
            print(f"skipped: {error['message']}", file=sys.stderr)
