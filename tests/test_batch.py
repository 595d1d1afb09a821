"""Journaled map/imap and ``python -m bridge batch``, against the real simulated server."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bridge
from bridge.testing import SimulatedServer, serve

calls: list[int] = []


async def double(n: int) -> int:
    calls.append(n)
    if n == 7:
        raise ValueError("seven is unlucky")
    return n * 2


async def other(n: int) -> int:
    return n


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    calls.clear()


class TestJournal:
    def test_rerun_skips_finished_items_and_returns_the_same(
        self, b: bridge.Bridge, tmp_path: Path
    ) -> None:
        journal = tmp_path / "run.sqlite"
        first = b.map(double, range(10), journal=journal, return_exceptions=True)
        calls.clear()
        again = b.map(double, range(12), journal=journal, return_exceptions=True)
        assert calls == [10, 11]
        assert again[:7] == first[:7]
        assert again[8:10] == first[8:10]
        assert isinstance(again[7], bridge.RecordedError)
        assert again[7].type_name == "ValueError"

    def test_interrupted_imap_resumes(self, b: bridge.Bridge, tmp_path: Path) -> None:
        journal = tmp_path / "run.sqlite"
        results = b.imap(double, range(6), journal=journal, concurrency=1)
        assert [next(results) for _ in range(3)] == [0, 2, 4]
        results.close()
        calls.clear()
        assert list(b.imap(double, range(6), journal=journal)) == [0, 2, 4, 6, 8, 10]
        assert not {0, 1, 2} & set(calls)

    def test_failure_raises_and_retry_failed_runs_it_again(
        self, b: bridge.Bridge, tmp_path: Path
    ) -> None:
        journal = tmp_path / "run.sqlite"
        with pytest.raises(ValueError, match="unlucky"):
            b.map(double, [7], journal=journal)
        with pytest.raises(bridge.RecordedError, match="retry_failed=True"):
            b.map(double, [7], journal=journal)
        calls.clear()
        with pytest.raises(ValueError, match="unlucky"):
            b.map(double, [7], journal=journal, retry_failed=True)
        assert calls == [7]

    def test_a_different_function_is_refused(self, b: bridge.Bridge, tmp_path: Path) -> None:
        journal = tmp_path / "run.sqlite"
        b.map(other, [1], journal=journal)
        with pytest.raises(bridge.JournalMismatchError, match="function"):
            b.map(double, [1], journal=journal)
        with pytest.raises(bridge.JournalMismatchError, match="key_scheme"):
            b.map(other, [1], journal=journal, key=str)

    def test_an_unserialisable_result_is_refused(self, b: bridge.Bridge, tmp_path: Path) -> None:
        async def opaque(n: int) -> object:
            return object()

        with pytest.raises(TypeError, match="return one of those instead"):
            b.map(opaque, [1], journal=tmp_path / "run.sqlite")

    def test_an_item_without_a_stable_key_is_refused(
        self, b: bridge.Bridge, tmp_path: Path
    ) -> None:
        with pytest.raises(TypeError, match="key=lambda"):
            b.map(other, [object()], journal=tmp_path / "run.sqlite")

    def test_openai_response_round_trips(self, b: bridge.Bridge, tmp_path: Path) -> None:
        import openai

        with serve() as server:
            client = bridge.openai(base_url=server.base_url, api_key="test")

            async def ask(prompt: str) -> Any:
                return await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": prompt}]
                )

            journal = tmp_path / "run.sqlite"
            first = b.map(ask, ["a", "b"], journal=journal)
            before = server.stats()["requests"]
            again = b.map(ask, ["a", "b"], journal=journal)
            assert server.stats()["requests"] == before
        assert all(isinstance(r, openai.types.chat.ChatCompletion) for r in again)
        assert again == first


def write_requests(path: Path, count: int, *, bad_line: int | None = None) -> None:
    with path.open("w") as out:
        for i in range(count):
            if i == bad_line:
                out.write("{not json\n")
                continue
            body = {"model": "m", "messages": [{"role": "user", "content": f"prompt {i}"}]}
            request = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**request, "body": body}) + "\n")


def batch(*args: str | Path, **kwargs: Any) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bridge", "batch", *map(str, args)]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs
    )


def journal_rows(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        try:
            return dict(db.execute("SELECT key, finished FROM results WHERE ok = 1"))
        except sqlite3.OperationalError:  # not created yet
            return {}


def wait_for_rows(journal: Path, count: int) -> None:
    deadline = time.monotonic() + 60  # a hang guard only
    while len(journal_rows(journal)) < count:
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.05)


@pytest.fixture
def server() -> Iterator[SimulatedServer]:
    with serve(latency=0.05, rpm=12_000, error_rates={500: 0.02}) as running:
        yield running


class TestBatchCommand:
    def test_end_to_end_with_a_malformed_line(
        self, server: SimulatedServer, tmp_path: Path
    ) -> None:
        requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        write_requests(requests, 20, bad_line=4)
        run = batch(requests, "-o", output, "--base-url", server.base_url, "--api-key", "k",
                    "--price-in", "1", "--price-out", "2")  # fmt: skip
        _, err = run.communicate(timeout=60)
        lines = [json.loads(line) for line in output.read_text().splitlines()]
        assert len(lines) == 20
        assert lines[4]["error"]["message"].startswith("line 5: invalid JSON")
        assert [line["custom_id"] for line in lines[5:]] == [f"r{i}" for i in range(5, 20)]
        assert "line 5" in err
        assert "estimated cost" in err
        assert "tokens in" in err

    def test_unwritable_output_fails_before_any_request(
        self, server: SimulatedServer, tmp_path: Path
    ) -> None:
        requests = tmp_path / "in.jsonl"
        write_requests(requests, 3)
        unwritable = tmp_path / "missing" / "out.jsonl"
        run = batch(requests, "-o", unwritable, "--base-url", server.base_url)
        _, err = run.communicate(timeout=60)
        assert run.returncode == 2
        assert "cannot write the output" in err
        assert server.stats()["requests"] == 0

    def test_sigkill_at_half_then_resume(self, server: SimulatedServer, tmp_path: Path) -> None:
        # The issue asks for 2,000 requests; 400 keep CI short and exercise the same path.
        count = 400
        requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        journal = Path(f"{output}.journal.sqlite")
        write_requests(requests, count)
        options = ("-o", output, "--base-url", server.base_url, "--concurrency", "20")
        run = batch(requests, *options)
        wait_for_rows(journal, count // 2)
        run.kill()
        run.communicate()
        finished = journal_rows(journal)
        before = server.stats()
        run = batch(requests, *options)
        run.communicate(timeout=90)
        after = server.stats()
        lines = [json.loads(line) for line in output.read_text().splitlines()]
        assert [line["custom_id"] for line in lines] == [f"r{i}" for i in range(count)]
        # Every admitted request of the rerun is an unfinished item or a retried fault.
        faults = after["faults"].get("status:500", 0) - before["faults"].get("status:500", 0)
        assert after["requests"] - before["requests"] == count - len(finished) + faults
        rows = journal_rows(journal)
        assert all(rows[key] == stamp for key, stamp in finished.items())  # not redone
        with sqlite3.connect(journal) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    def test_ctrl_c_stops_cancels_and_keeps_what_finished(self, tmp_path: Path) -> None:
        requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        journal = Path(f"{output}.journal.sqlite")
        write_requests(requests, 300)
        with serve(latency=0.2) as slow:
            run = batch(requests, "-o", output, "--base-url", slow.base_url, "--concurrency", "10")
            wait_for_rows(journal, 20)
            run.send_signal(signal.SIGINT)
            _, err = run.communicate(timeout=30)  # a hang guard only
            kept = journal_rows(journal)
            deadline = time.monotonic() + 10
            while slow.stats()["in_flight"] and time.monotonic() < deadline:
                time.sleep(0.05)
            stats = slow.stats()
        assert run.returncode == 130
        assert "interrupted" in err
        assert stats["in_flight"] == 0
        assert stats["requests"] < 300
        assert len(kept) >= 20
