"""``progress=``: a terminal progress bar for ``map``/``imap``, drawn in the caller's thread.

The bar goes to standard error and only when that is a terminal (``progress="force"``
draws it anyway), so a Django or Flask worker, whose stderr is a log, never gets one. It
uses rich, installed with the ``progress`` extra, and shows the rate, the time left, the
failures among the results, and the 429s and tokens the bridge's clients saw meanwhile.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, Literal, TypeVar

from .._extras import require
from .._process import endpoint_stats

__all__ = ["Progress", "with_progress"]

T = TypeVar("T")

Progress = bool | Literal["force"]


def wanted(progress: Progress) -> bool:
    if progress not in (True, False, "force"):
        raise ValueError(f'progress must be True, False or "force", got {progress!r}')
    return progress == "force" or (progress is True and sys.stderr.isatty())


def with_progress(results: Iterator[T], *, total: int | None, label: str) -> Iterator[T]:
    """Yield ``results`` unchanged while a bar counts them; closing this closes them."""
    require("progress=True", "progress", "rich")
    from rich.console import Console  # noqa: PLC0415 - optional, only when a bar is drawn
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar  # noqa: PLC0415

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        TextColumn("failed {task.fields[failed]}  429s {task.fields[limited]}  "
                   "tokens {task.fields[tokens]}"),
    )  # fmt: skip
    base = _traffic()
    try:
        # stderr, never stdout (a script's output stays clean); called only when wanted,
        # so drawing as on a terminal is right even when "force" points it at a pipe.
        console = Console(stderr=True, force_terminal=True)
        with Bar(*columns, console=console, transient=False) as bar:
            task = bar.add_task(label, total=total, rate="", failed=0, limited=0, tokens=0)
            failed = 0
            for result in results:
                failed += isinstance(result, BaseException)
                limited, tokens = (now - then for now, then in zip(_traffic(), base, strict=True))
                speed = bar.tasks[0].speed
                rate = f"{speed:.1f}/s" if speed else ""
                bar.update(task, advance=1, rate=rate, failed=failed, limited=limited,
                           tokens=tokens)  # fmt: skip
                yield result
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def _traffic() -> tuple[int, int]:
    """429s and tokens so far, over every endpoint the bridge's clients used."""
    stats: Any = endpoint_stats().values()
    return (
        sum(s.rate_limited for s in stats),
        sum(s.tokens_in + s.tokens_out for s in stats),
    )
