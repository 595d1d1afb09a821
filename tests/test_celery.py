"""``bridge.celery``: one bridge per worker process, under every Celery pool, for real.

The module starts one real worker per pool (``python -m celery -A celery_pool_app worker``,
see celery_pool_app.py) side by side, each on a queue of its own on a real RabbitMQ, and
sends them tasks that call the simulated server through ``bridge.map/run/imap`` and a
client made at import time. The last test stops them all by pid and reads their logs.
Counts come from the server's ``/_stats``, the task results and the workers' logs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from celery_workers import Worker, close_client, forget_batches, start_workers, stop_all, unique
from polling import poll

import bridge
import bridge.celery
from bridge.testing import SimulatedServer, serve

celery = pytest.importorskip("celery")

#: One xdist worker runs the whole module: its workers fixture is per process, and the last
#: test reads what the earlier ones left in the workers' logs.
pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow, pytest.mark.xdist_group("celery-pools")]

TASKS, TEXTS = 6, 5
#: The client's requests in flight per process that celery_pool_app's bridge_limits sets.
PER_PROCESS = 3
#: A hang guard for a task's result, never a timing assertion.
GUARD = 60
#: Each pool, its options, and how many processes run its tasks.
POOLS = {
    "prefork": (("--concurrency", "2"), 2),
    "threads": (("--concurrency", "4"), 1),
    "solo": ((), 1),
    "gevent": (("--concurrency", "8"), 1),
}
#: Where the prefork worker's bridge_journal points (the postgres_url fixture's default).
JOURNAL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatedServer]:
    with serve(latency=0.05) as running:
        yield running


@pytest.fixture(scope="module")
def workers(
    server: SimulatedServer, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[Worker, str]]]:
    """One worker per pool, started side by side, each with its queue."""
    queues = {pool: unique(f"bridge-test-{pool}") for pool in POOLS}
    argvs = [
        ["-m", "celery", "-A", "celery_pool_app", "worker", "-P", pool, *POOLS[pool][0],
         "--queues", queues[pool], "--hostname", f"{unique(pool)}@%h", "--loglevel", "INFO",
         "--without-gossip", "--without-mingle"]
        for pool in POOLS
    ]  # fmt: skip
    env = {"OPENAI_BASE_URL": server.base_url, "RABBITMQ_URL": rabbitmq_url,
           "BRIDGE_TEST_JOURNAL": JOURNAL}  # fmt: skip
    started = start_workers(argvs, env=env, logs=tmp_path_factory.mktemp("pools"))
    yield {pool: (worker, queues[pool]) for pool, worker in zip(POOLS, started, strict=True)}
    stop_all(started)


@pytest.fixture
def client(rabbitmq_url: str) -> Iterator[Any]:
    """The enqueuing side, as a web process has it: the broker and the result backend."""
    app = celery.Celery("pool-test-client", broker=rabbitmq_url, backend="rpc://")
    yield app
    close_client(app)


@pytest.fixture
def fresh(server: SimulatedServer) -> SimulatedServer:
    server.reset()
    return server


def run_tasks(client: Any, queue: str) -> list[dict[str, Any]]:
    texts = [[f"{queue} task {t} text {i}" for i in range(TEXTS)] for t in range(TASKS)]
    sent = [client.send_task("celery_pool_app.summarise", args=[t], queue=queue) for t in texts]
    return [result.get(timeout=GUARD) for result in sent]


@pytest.mark.parametrize("pool", list(POOLS))
def test_every_task_runs_on_its_process_bridge(
    pool: str, workers: dict[str, tuple[Worker, str]], fresh: SimulatedServer, client: Any
) -> None:
    worker, queue = workers[pool]
    results = run_tasks(client, queue)
    stats = fresh.stats()
    assert all(r["ok"] for r in results), results
    assert stats["requests"] == sum(r["sent"] for r in results) == TASKS * (TEXTS + 3)
    assert stats["status_counts"] == {"200": stats["requests"]}
    # One bridge (and one admission controller) per process, shared by its tasks and threads.
    bridges: dict[int, set[int]] = defaultdict(set)
    for r in results:
        bridges[r["pid"]].add(r["bridge"])
    assert all(len(ids) == 1 for ids in bridges.values()), bridges
    assert {r["lane"] for r in results} == {"batch"}  # workers yield to the web tier
    assert len(bridges) <= POOLS[pool][1]
    assert stats["max_in_flight"] <= PER_PROCESS * POOLS[pool][1]
    assert all(f"bridge ready in worker process {pid}" in worker.text() for pid in bridges)


def test_asyncio_run_per_task_breaks_a_shared_client_and_the_bridge_does_not(
    workers: dict[str, tuple[Worker, str]], fresh: SimulatedServer, client: Any
) -> None:
    """celery#6552: a client shared across tasks outlives the loop ``asyncio.run`` made."""
    worker, queue = workers["solo"]  # one process, so the second task meets the first's client
    plain = [
        client.send_task("celery_pool_app.with_asyncio_run", args=[f"{queue} {i}"], queue=queue)
        for i in range(2)
    ]
    for result in plain:
        result.get(timeout=GUARD, propagate=False)
    bridged = run_tasks(client, queue)
    assert plain[0].successful()
    assert plain[1].failed()  # its pooled connection belongs to the first task's closed loop
    assert "Event loop is closed" in worker.text()
    assert all(r["ok"] for r in bridged)
    # The worker logs the failure after storing the result: wait for the line.
    failed = poll(lambda: _failed_tasks(worker.text()), timeout=GUARD, what="the failure logged")
    assert failed == ["celery_pool_app.with_asyncio_run"]  # that one, and no bridged task


def _failed_tasks(log: str) -> list[str]:
    return re.findall(r"Task (\S+)\[\S+\] raised unexpected", log)


@pytest.mark.postgres
def test_map_fans_a_list_out_over_the_workers_and_resumes(
    workers: dict[str, tuple[Worker, str]], fresh: SimulatedServer, postgres_url: str
) -> None:
    import celery_pool_app

    assert postgres_url == JOURNAL  # the prefork worker was started with this journal
    _, queue = workers["prefork"]
    texts = [f"{queue} item {i}" for i in range(40)]
    batch_id = unique("fanout")
    options = {"app": celery_pool_app.app, "chunk_size": 7, "journal": postgres_url,
               "batch_id": batch_id, "queue": queue}  # fmt: skip
    try:
        first = bridge.celery.map(celery_pool_app.digest_of, texts, **options)
        sent = fresh.stats()["requests"]
        again = bridge.celery.map(celery_pool_app.digest_of, texts, **options)
    finally:
        close_client(celery_pool_app.app)
        forget_batches(postgres_url, [batch_id])
    assert [ok for ok, _ in first] == [True] * len(texts)
    assert sent == len(texts)  # each item once
    assert again == first  # replayed from the journal, in input order
    assert fresh.stats()["requests"] == sent  # nothing sent again


def test_each_process_closes_its_bridge_at_shutdown(
    workers: dict[str, tuple[Worker, str]],
) -> None:
    """Last in this module: stops every worker by pid (SIGTERM: a warm shutdown)."""
    stop_all([worker for worker, _ in workers.values()])
    for pool, (worker, _) in workers.items():
        log = worker.text()
        ready = set(re.findall(r"bridge ready in worker process (\d+)", log))
        closed = set(re.findall(r"bridge closed in worker process (\d+)", log))
        assert len(ready) == POOLS[pool][1], (pool, log[-3000:])
        assert closed == ready, (pool, log[-3000:])
        # Only the solo worker ran the asyncio.run task meant to fail (if this xdist worker
        # ran that test: the module's workers are per test process).
        allowed = {"celery_pool_app.with_asyncio_run"} if pool == "solo" else set()
        assert set(_failed_tasks(log)) <= allowed, log[-3000:]


def test_import_bridge_celery_does_not_import_celery() -> None:
    probe = "import sys, bridge.celery; print('celery' in sys.modules, 'kombu' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["False", "False"]


def test_bad_settings_fail_at_init_app_listing_every_problem() -> None:
    app = celery.Celery("bad-settings")
    app.conf.bridge_concurrency = 0
    app.conf.bridge_limits = {"api.openai.com": {"rpm": 10}}
    app.conf.bridge_journal = "journal.sqlite"
    app.conf.bridge_lane = "urgent"
    with pytest.raises(ValueError, match="bridge_concurrency") as raised:
        bridge.celery.init_app(app, store="mysql://h")
    message = str(raised.value)
    assert "bridge_limits key 'api.openai.com' is not a base URL" in message
    assert "bridge_journal must be a PostgreSQL URL" in message
    assert "bridge_store is invalid" in message
    assert "bridge_lane must be 'batch' or 'interactive', got 'urgent'" in message


def test_settings_fill_the_store_into_limits_and_hide_passwords() -> None:
    app = celery.Celery("good-settings")
    config = bridge.celery.init_app(
        app,
        store="redis://:s3cret@127.0.0.1:6379/0",
        journal="postgresql://u:s3cret@db/llm",
        limits={"https://api.example.com/v1/": {"rpm": 100}},
    )
    assert bridge.celery.settings(app) is config
    assert config.limits_for("https://api.example.com/v1").rpm == 100
    assert config.limits_for("https://api.example.com/v1").store == config.store
    assert config.limits_for("https://elsewhere/v1").store == config.store  # learned, shared
    assert "s3cret" not in repr(config)
    assert app.conf.bridge_store == config.store  # written where the workers read it
    assert bridge.celery.CHUNK_TASK in app.tasks


async def unmarked(text: str) -> str:
    return text


class TestOnlyMarkedFunctionsRunOnTheWorkers:
    """A chunk names its function by path, and the broker is untrusted input."""

    def test_the_caller_refuses_an_unmarked_function(self) -> None:
        with pytest.raises(TypeError, match=r"decorate it with @bridge\.celery\.fanout"):
            bridge.celery.submit(unmarked, ["x"], journal=JOURNAL, app=_app_with_backend())

    def test_the_caller_refuses_a_function_the_workers_cannot_import(self) -> None:
        local = bridge.celery.fanout(lambda text: text)
        with pytest.raises(TypeError, match="must be importable by the workers"):
            bridge.celery.submit(local, ["x"], journal=JOURNAL, app=_app_with_backend())

    @pytest.mark.parametrize(
        "path",
        [
            "subprocess:getoutput",  # imported here, but not marked
            "celery_pool_app:os.system",  # reached through a task module: not its own
            "antigravity:fly",  # never imported: a chunk imports nothing
            f"{__name__}:unmarked",
        ],
    )
    def test_a_worker_refuses_any_other_path(self, path: str) -> None:
        import celery_pool_app  # noqa: F401 - a task module the worker has imported

        from bridge.celery._fanout import _marked

        with pytest.raises(RuntimeError, match=r"refused to run|has not imported"):
            _marked(path)
        assert "antigravity" not in sys.modules

    @pytest.mark.parametrize("cls", ["antigravity:Thing", "subprocess:Popen", "os:environ"])
    def test_items_from_the_broker_import_and_build_nothing_else(self, cls: str) -> None:
        from bridge._integration import loads

        for tag in ("enum", "pydantic"):
            text = f'{{"__bridge__": "{tag}", "cls": "{cls}", "name": "x", "data": {{}}}}'
            with pytest.raises(ValueError, match="refused to rebuild"):
                loads(text, trusted=False)
        assert "antigravity" not in sys.modules

    def test_a_marked_function_of_a_task_module_is_found(self) -> None:
        import celery_pool_app

        from bridge.celery._fanout import _marked

        assert _marked("celery_pool_app:digest_of") is celery_pool_app.digest_of


def _app_with_backend() -> Any:
    return celery.Celery("refusals", broker="memory://", backend="cache+memory://")
