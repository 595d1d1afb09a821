"""``python -m bridge.batch.scale [N]``: N items (default 200,000) through a journaled imap.

The items come from a generator and the function returns at once, so what this measures
is the journal's and imap's own memory; it prints the peak RSS at the end.
"""

from __future__ import annotations

import resource
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import bridge


async def square(n: int) -> int:
    """Answer at once: the journal and the iteration are what is measured."""
    return n * n


def numbers(count: int) -> Iterator[int]:
    yield from range(count)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    count = int(args[0]) if args else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "scale.sqlite"
        total = sum(bridge.imap(square, numbers(count), concurrency=64, journal=journal))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"{count:,} items through imap with a journal; peak RSS {peak_mib:.0f} MiB ({total})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
