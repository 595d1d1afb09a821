"""django_example on Celery: ``manage.py summarize_batch`` and a real ``celery -A example`` worker.

The worker and the command run as a user runs them, from django_example/, against the
simulated server, a real RabbitMQ (a queue of the test's own) and PostgreSQL (a batch of
the test's own, deleted afterwards).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery_workers import Worker, forget_batches, unique

from bridge.testing import SimulatedServer, expected_digest

pytest.importorskip("celery")
pytest.importorskip("psycopg")

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parent.parent / "django_example"


@pytest.fixture
def env(
    llm_server: SimulatedServer, rabbitmq_url: str, postgres_url: str, tmp_path: Path
) -> dict[str, str]:
    made = {
        **os.environ,
        "OPENAI_BASE_URL": llm_server.base_url,
        "OPENAI_API_KEY": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": rabbitmq_url,
        "CELERY_QUEUE": unique("bridge-test-django"),
        "BRIDGE_JOURNAL_URL": postgres_url,
    }
    made.pop("DJANGO_SETTINGS_MODULE", None)
    return made


@pytest.fixture
def batch_id(postgres_url: str) -> Iterator[str]:
    made = unique("django-batch")
    yield made
    forget_batches(postgres_url, [made])


def summarize_batch(env: dict[str, str], documents: list[str], batch_id: str):
    return subprocess.run(
        [sys.executable, "manage.py", "summarize_batch", "--chunk-size", "4",
         "--batch-id", batch_id],
        cwd=EXAMPLE, env=env, input="\n\n".join(documents), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.llm_server(latency=0.05)
def test_summarize_batch_runs_on_the_workers_shows_progress_and_resumes(
    llm_server: SimulatedServer, env: dict[str, str], batch_id: str, tmp_path: Path
) -> None:
    worker = Worker(
        ["-m", "celery", "-A", "example", "worker", "--concurrency", "2", "--loglevel", "INFO",
         "--without-gossip", "--without-mingle", "--hostname", f"{unique('django')}@%h"],
        env=env, log=tmp_path / "worker.log", cwd=EXAMPLE,
    ).wait_ready()  # fmt: skip
    documents = [f"{batch_id} document {i}" for i in range(10)]
    try:
        first = summarize_batch(env, documents, batch_id)
        sent = llm_server.stats()["requests"]
        again = summarize_batch(env, documents, batch_id)
    finally:
        worker.stop()
    assert first.returncode == 0, first.stderr + worker.text()[-3000:]
    lines = first.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"stdin #{i + 1}" for i in range(10)]
    pairs = zip(documents, lines, strict=True)
    assert all(f"digest={expected_digest(d)}" in line for d, line in pairs)
    assert f"batch {batch_id}: 10 of 10 documents queued in 3 tasks" in first.stderr
    assert re.search(r"\b10/10 documents done", first.stderr)
    assert sent == 10
    assert again.returncode == 0, again.stderr
    assert f"batch {batch_id}: 0 of 10 documents queued in 0 tasks" in again.stderr
    assert again.stdout == first.stdout  # replayed from the journal
    assert llm_server.stats()["requests"] == sent
    assert "bridge ready in worker process" in worker.text()
