"""Real Celery worker processes for the tests: started, watched through their log, stopped.

Each worker runs in a session of its own, so it and its pool's children can be killed
together, as a machine that dies takes them all. Stopping sends SIGTERM to the worker
(Celery's warm shutdown: its children finish and run worker_process_shutdown) and SIGKILLs
the whole group only if it has not exited by then.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
#: A hang guard for a worker's start, never a timing assertion.
GUARD_SECONDS = 60.0
#: How long a warm shutdown may take (its running tasks finish) before SIGKILL.
STOP_SECONDS = 20.0


def unique(prefix: str) -> str:
    """A name no other test run (or engineer) on the shared broker and databases uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Worker:
    """One worker command in its own session, logging to ``log``."""

    def __init__(
        self, argv: list[str], *, env: dict[str, str], log: Path, cwd: Path = HERE
    ) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, *argv],
                env={**os.environ, "PYTHONPATH": str(HERE), **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> Worker:
        deadline = time.monotonic() + GUARD_SECONDS
        while " ready." not in self.text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the worker did not start:\n{self.text()[-3000:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole group if it outlives the guard."""
        stop_all([self])

    def kill(self) -> None:
        """SIGKILL the worker and every process of its session (its pool's children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(GUARD_SECONDS)


def start_workers(argvs: list[list[str]], *, env: dict[str, str], logs: Path) -> list[Worker]:
    """Start the workers side by side, then wait until each is consuming."""
    logs.mkdir(parents=True, exist_ok=True)
    workers = [Worker(argv, env=env, log=logs / f"worker-{n}.log") for n, argv in enumerate(argvs)]
    try:
        for worker in workers:
            worker.wait_ready()
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    return workers


def stop_all(workers: list[Worker]) -> None:
    """SIGTERM every worker at once (a warm shutdown each), then SIGKILL what is left."""
    for worker in workers:
        if worker.process.poll() is None:
            os.kill(worker.pid, signal.SIGTERM)
    for worker in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(STOP_SECONDS)
        worker.kill()


def close_client(app: Any) -> None:
    """Close a Celery app the test enqueued with, and the rpc backend's reply connection."""
    consumer = getattr(app.backend, "result_consumer", None)
    if consumer is not None and getattr(consumer, "_consumer", None) is not None:
        consumer.stop()
    app.close()


def forget_batches(postgres_url: str, batch_ids: list[str]) -> None:
    """Delete the journal rows of the batches a test made."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as db:
        for table in ("bridge_journal", "bridge_journal_meta", "bridge_journal_holders"):
            db.execute(f"DELETE FROM {table} WHERE batch_id = ANY(%s)", (batch_ids,))  # noqa: S608
