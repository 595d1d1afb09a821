"""``progress=``: a bar on a terminal (or when forced), never otherwise; results unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge import Bridge


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def odd_fails(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def test_forced_bar_counts_every_result(b: Bridge, capsys: pytest.CaptureFixture[str]) -> None:
    assert b.map(double, range(20), progress="force") == [2 * x for x in range(20)]
    drawn = capsys.readouterr().err
    assert "bridge.map" in drawn
    assert "20/20" in drawn


def test_no_bar_when_stderr_is_not_a_terminal(
    b: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    # Under pytest, stderr is captured, not a terminal: as in a Django or Flask worker.
    assert b.map(double, range(5), progress=True) == [0, 2, 4, 6, 8]
    assert list(b.imap(double, range(5), progress=True)) == [0, 2, 4, 6, 8]
    assert capsys.readouterr().err == ""


def test_failures_stay_in_place_and_are_counted(
    b: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    results = b.map(odd_fails, range(6), progress="force", return_exceptions=True)
    assert [r if isinstance(r, int) else type(r).__name__ for r in results] == [
        0, "ValueError", 2, "ValueError", 4, "ValueError",
    ]  # fmt: skip
    assert "failed 3" in capsys.readouterr().err


def test_plain_functions_still_run_in_the_pool(b: Bridge) -> None:
    import threading

    loop_thread = b.run(_loop_thread())
    threads = b.map(lambda _: threading.get_ident(), range(4), progress="force",
                    return_exceptions=True)  # fmt: skip
    assert loop_thread not in threads


async def _loop_thread() -> int:
    import threading

    return threading.get_ident()


def test_imap_and_journal_with_a_forced_bar(
    b: Bridge, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert list(b.imap(double, range(7), progress="force")) == [2 * x for x in range(7)]
    journal = tmp_path / "run.sqlite"
    assert b.map(double, range(4), journal=journal, progress="force") == [0, 2, 4, 6]
    drawn = capsys.readouterr().err
    assert "7/7" in drawn
    assert "4/4" in drawn


def test_bad_progress_value(b: Bridge) -> None:
    with pytest.raises(ValueError, match="progress must be"):
        b.map(double, [1], progress="yes")  # type: ignore[arg-type]
