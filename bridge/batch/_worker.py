"""``python -m bridge worker --broker URL --store URL --journal URL``: a batch worker.

A Celery worker running the batch command's app: it takes chunks of request lines from
the broker, sends them to ``OPENAI_BASE_URL`` under the limits shared through the store,
and records every outcome in the journal. Start as many as you like, on as many machines.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Any, cast

from ._distributed import DEFAULT_QUEUE

__all__ = ["main"]

EXIT_USAGE = 2
POOLS = ("prefork", "threads", "solo", "gevent")

DESCRIPTION = """\
Start a Celery worker for `python -m bridge batch --broker`: it runs the chunks of
request lines that the batch command enqueues, sends each line to the API in
OPENAI_BASE_URL (with OPENAI_API_KEY), under rate limits learned from the provider's
headers and shared by every worker through the store, and records each outcome in the
journal. A chunk is acknowledged only once it has finished: if a worker dies mid-chunk,
the chunk is delivered again, and only its lines not yet in the journal are sent again.
"""

EPILOG = """\
example:
  export OPENAI_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=...
  python -m bridge worker --broker amqp://guest:guest@127.0.0.1:5672// \\
      --store redis://127.0.0.1:6379/0 --journal postgresql://127.0.0.1/llm --concurrency 4
"""

# gevent must patch the standard library before anything else is imported, and `python -m
# bridge` has imported the bridge (asyncio, ssl, threading) by the time this runs: so the
# gevent pool restarts this command (same pid) in an interpreter that patches first.
_GEVENT_BOOT = (
    "import sys; from celery import maybe_patch_concurrency; "
    "maybe_patch_concurrency(['-P', 'gevent']); "
    "from bridge.batch._worker import main; sys.exit(main(sys.argv[1:]))"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge worker",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--broker", required=True, metavar="URL", help="the Celery broker, e.g. amqp://host//")
    add(
        "--store",
        required=True,
        metavar="URL",
        help="the Redis store every worker shares its rate limits through, e.g. redis://host:6379/0",
    )
    add(
        "--journal",
        required=True,
        metavar="URL",
        help="the PostgreSQL journal, e.g. postgresql://user@host/db (the batch command's)",
    )
    add(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (threads, greenlets) taking chunks at once (default: CPU count)",
    )
    add("--pool", choices=POOLS, default="prefork", help="Celery's pool (default: %(default)s)")
    add(
        "--queue",
        default=DEFAULT_QUEUE,
        metavar="NAME",
        help="the queue to take chunks from; the batch command's --queue (default: %(default)s)",
    )
    add(
        "--on-store-error",
        choices=("local", "fail"),
        default="local",
        help="when the store is unreachable: 'local' limits per process, with a warning; "
        "'fail' fails the requests, which a rerun sends again (default: %(default)s)",
    )
    add("--loglevel", default="INFO", help="Celery's log level (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base_url = os.environ.get("OPENAI_BASE_URL")
    if not base_url:
        print("error: set OPENAI_BASE_URL (and OPENAI_API_KEY) for the worker", file=sys.stderr)
        return EXIT_USAGE
    if args.concurrency is not None and args.concurrency < 1:
        print("error: --concurrency must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.pool == "gevent" and "gevent.monkey" not in sys.modules:
        given = sys.argv[1:] if argv is None else argv
        os.execv(sys.executable, [sys.executable, "-c", _GEVENT_BOOT, *given])  # noqa: S606
    from ._distributed import make_app  # noqa: PLC0415 - imports celery, after any patching

    app = make_app(
        broker=args.broker,
        journal=args.journal,
        store=args.store,
        queue=args.queue,
        base_url=base_url,
        on_store_error=args.on_store_error,
    )
    name = f"bridge-{uuid.uuid4().hex[:8]}@%h"
    celery_argv = ["worker", "--pool", args.pool, "--queues", args.queue, "--hostname", name,
                   "--loglevel", args.loglevel, "--without-gossip", "--without-mingle"]  # fmt: skip
    if args.concurrency is not None:
        celery_argv += ["--concurrency", str(args.concurrency)]
    # Typed as never returning, but it does when the worker stops (SIGTERM, Ctrl-C).
    cast(Any, app).worker_main(celery_argv)
    return 0
