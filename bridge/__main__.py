"""``python -m bridge COMMAND``: ``bench`` runs the side-by-side benchmark, ``batch`` a JSONL
file of requests (resumable, in this process or on a Celery cluster), ``worker`` a Celery
worker for a batch on a cluster."""

from __future__ import annotations

import sys

USAGE = "usage: python -m bridge {bench,batch,worker} [options]   (python -m bridge batch --help)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "bench":
        from bridge.bench._cli import main as bench  # noqa: PLC0415 - only the command's deps

        return bench(rest)
    if command == "batch":
        from bridge.batch._cli import main as batch  # noqa: PLC0415 - only the command's deps

        return batch(rest)
    if command == "worker":
        from bridge.batch._worker import main as worker  # noqa: PLC0415 - imports celery

        return worker(rest)
    print(f"unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
