"""The PostgreSQL journal: ``journal="postgresql://..."``, against a real PostgreSQL.

Every test uses batches of its own and deletes their rows afterwards. Under CI a missing
PostgreSQL fails these tests (the ``postgres_url`` fixture); elsewhere they skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery_workers import forget_batches, unique

import bridge
from bridge._integration import Entry, PostgresStore, open_store, store_for
from bridge.batch._cli import main as batch_main
from bridge.testing import SimulatedServer

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

CONFIG = {"function": "tests.f", "key_scheme": "k"}


@pytest.fixture
def batches(postgres_url: str) -> Iterator[list[str]]:
    """Batch ids for this test; their rows are deleted afterwards."""
    made: list[str] = []
    yield made
    forget_batches(postgres_url, made)


@pytest.fixture
def journal(postgres_url: str, batches: list[str]) -> str:
    """A journal URL naming a fresh batch."""
    batches.append(unique("pg-journal"))
    return f"{postgres_url}?batch={batches[-1]}"


def opened(url: str, **options: Any) -> PostgresStore:
    store = PostgresStore(url, **options)
    open_store(store, CONFIG)
    return store


class TestMap:
    def test_outcomes_are_recorded_and_replayed_in_order(self, journal: str) -> None:
        calls: list[int] = []

        def square(n: int) -> int:
            calls.append(n)
            if n == 3:
                raise ValueError("three")  # a final failure: replayed, not retried
            return n * n

        first = bridge.map(square, range(6), journal=journal, return_exceptions=True)
        again = bridge.map(square, range(6), journal=journal, return_exceptions=True)
        assert first[:3] == again[:3] == [0, 1, 4]
        assert isinstance(again[3], bridge.RecordedError)
        assert again[3].type_name == "ValueError"
        assert sorted(calls) == [0, 1, 2, 3, 4, 5]  # the rerun called nothing

    def test_the_default_batch_is_the_function(self, postgres_url: str, batches: list[str]) -> None:
        store = store_for(postgres_url, default_batch="pkg.mod.fn")
        assert isinstance(store, PostgresStore)
        assert store.batch == "pkg.mod.fn"
        assert store.location.endswith("/test?batch=pkg.mod.fn")

    def test_another_function_on_the_same_batch_is_refused(self, journal: str) -> None:
        bridge.map(abs, [-1], journal=journal)
        with pytest.raises(bridge.JournalMismatchError, match="written with function"):
            bridge.map(str, [-1], journal=journal)


class TestLocks:
    def test_one_writer_the_second_is_told_who_holds_it(self, journal: str) -> None:
        first = bridge.imap(abs, [-1, -2], journal=journal)
        try:
            with pytest.raises(bridge.JournalLockedError, match=r"in use by a run: pid \d+ on"):
                bridge.map(abs, [-1, -2], journal=journal)
        finally:
            first.close()
        assert bridge.map(abs, [-1, -2], journal=journal) == [1, 2]

    def test_a_lock_left_by_a_killed_process_is_released(self, journal: str) -> None:
        code = textwrap.dedent(
            f"""
            import os, signal
            from bridge._integration import open_store
            from bridge._integration import PostgresStore
            store = PostgresStore({journal!r})
            open_store(store, {CONFIG!r})
            print("locked", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            """
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=60, check=False)  # fmt: skip
        assert result.stdout.strip() == "locked"
        opened(journal).close()  # the server released it with the dead session

    def test_a_distributed_batch_and_a_writer_exclude_each_other(self, journal: str) -> None:
        driver = opened(journal, role="driver")
        chunks = [opened(journal, role="chunk", chunk=n) for n in range(2)]  # they share it
        try:
            with pytest.raises(bridge.JournalLockedError, match="driver of a distributed batch"):
                opened(journal)
            with pytest.raises(bridge.JournalLockedError, match="A batch has one driver"):
                opened(journal, role="driver")
        finally:
            driver.close()
        try:
            with pytest.raises(bridge.JournalLockedError, match="workers of a distributed batch"):
                opened(journal)
        finally:
            for chunk in chunks:
                chunk.close()
        writer = opened(journal)
        try:
            with pytest.raises(bridge.JournalLockedError, match="in use by a run"):
                opened(journal, role="chunk", chunk=0)
        finally:
            writer.close()

    def test_a_duplicate_chunk_waits_for_the_first_then_finds_its_items(
        self, journal: str, postgres_url: str
    ) -> None:
        first = opened(journal, role="chunk", chunk=7)
        second_ready = threading.Event()
        second: list[PostgresStore] = []

        def duplicate() -> None:
            second.append(opened(journal, role="chunk", chunk=7))
            second_ready.set()

        thread = threading.Thread(target=duplicate)
        thread.start()
        with psycopg.connect(postgres_url, autocommit=True) as db:
            waiting = 0
            while waiting == 0:  # until the server shows the duplicate waiting for the lock
                waiting = db.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND objid = 7 AND objsubid = 2"
                ).fetchone()[0]
        assert not second_ready.is_set()
        first.record("item", Entry(status="ok", value="1"))
        first.close()
        thread.join(30)
        assert second_ready.is_set()
        assert second[0].lookup("item") == Entry(
            status="ok", value="1", finished=second[0].lookup("item").finished
        )
        second[0].close()


class TestStore:
    def test_many_processes_write_one_batch_at_once(self, journal: str) -> None:
        code = textwrap.dedent(
            f"""
            import sys
            from bridge._integration import Entry, open_store
            from bridge._integration import PostgresStore
            n = int(sys.argv[1])
            store = PostgresStore({journal!r}, role="chunk", chunk=n)
            open_store(store, {CONFIG!r})
            for i in range(150):
                store.record(f"own-{{n}}-{{i}}", Entry(status="ok", value=str(i)))
                store.record(f"shared-{{i}}", Entry(status="ok", value=str(n)))  # contended
            store.close()
            """
        )
        writers = [subprocess.Popen([sys.executable, "-c", code, str(n)]) for n in range(4)]
        assert [w.wait(120) for w in writers] == [0, 0, 0, 0]
        store = opened(journal, role="chunk", chunk=99)
        try:
            own = store.lookup_many(f"own-{n}-{i}" for n in range(4) for i in range(150))
            shared = store.lookup_many(f"shared-{i}" for i in range(150))
        finally:
            store.close()
        assert len(own) == 600
        assert len(shared) == 150
        assert {entry.value for entry in shared.values()} <= {"0", "1", "2", "3"}

    def test_fresh_discards_only_this_batch(self, journal: str, postgres_url: str,
                                            batches: list[str]) -> None:  # fmt: skip
        batches.append(unique("pg-other"))
        other = opened(f"{postgres_url}?batch={batches[-1]}")
        mine = opened(journal)
        for store in (other, mine):
            store.record("k", Entry(status="ok", value="1"))
            store.close()
        fresh = PostgresStore(journal)
        open_store(fresh, CONFIG, fresh=True)
        kept = opened(f"{postgres_url}?batch={batches[-1]}")
        try:
            assert fresh.lookup("k") is None
            assert kept.lookup("k") is not None
        finally:
            fresh.close()
            kept.close()

    def test_no_password_in_the_location_or_the_errors(self) -> None:
        url = "postgresql://user:hunter2@127.0.0.1:1/db?batch=b&password=hunter2"
        store = PostgresStore(url)
        assert store.location == "postgresql://127.0.0.1:1/db?batch=b"
        assert "hunter2" not in repr(store)
        with pytest.raises(bridge.JournalUnavailableError) as raised:
            store.lock()
        assert "hunter2" not in str(raised.value)
        assert "postgresql://127.0.0.1:1/db?batch=b is unreachable" in str(raised.value)
        assert "run again to resume" in str(raised.value)

    def test_a_url_without_a_batch_needs_one(self) -> None:
        with pytest.raises(ValueError, match=r"add \?batch=NAME"):
            PostgresStore("postgresql://127.0.0.1/db")


@pytest.mark.llm_server(latency=0.01)
def test_the_batch_command_resumes_from_a_postgres_journal(
    llm_server: SimulatedServer, postgres_url: str, batches: list[str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    requests, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    tag = unique("pg-batch")
    with requests.open("w") as out:
        for i in range(20):
            body = {"model": "m", "messages": [{"role": "user", "content": f"{tag} {i}"}]}
            out.write(json.dumps({"custom_id": f"r{i}", "body": body}) + "\n")
    batches.append(tag)
    options = [str(requests), "-o", str(output), "--base-url", llm_server.base_url,
               "--journal", postgres_url, "--batch-id", tag]  # fmt: skip
    assert batch_main(options) == 0
    assert batch_main(options) == 0
    err = capsys.readouterr().err
    assert llm_server.stats()["requests"] == 20  # the rerun sent nothing
    assert "nothing left to send" in err
    assert [json.loads(line)["custom_id"] for line in output.read_text().splitlines()] == [
        f"r{i}" for i in range(20)
    ]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--broker", "amqp://h//"], "--broker needs a journal every worker can write"),
        (["--batch-id", "x"], "--batch-id names a batch in a PostgreSQL journal"),
    ],
)
def test_the_batch_command_refuses_a_sqlite_journal_where_it_cannot_serve(
    extra: list[str], problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = tmp_path / "in.jsonl"
    requests.write_text('{"model": "m"}\n')
    status = batch_main([str(requests), "-o", str(tmp_path / "out.jsonl"),
                         "--base-url", "http://127.0.0.1:9/v1", *extra])  # fmt: skip
    assert status == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()
