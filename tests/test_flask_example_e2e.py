"""flask_example served for real by gunicorn, with gthread and with gevent workers, against
the simulated LLM server at 0.3 s latency.

Nothing here measures time: concurrency shows in the simulated server's ``max_in_flight``.
``flask_example/bench_api.py`` measures the speed. Both servers start together, and their
50-request runs go side by side, to keep the module near 20 s.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from example_apps import DEEP, PRELOADED, Served, free_port

from bridge.testing import SimulatedServer, expected_digest, serve

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent / "flask_example"
BIN = Path(sys.executable).parent
LOOP_CLOSED = "Event loop is closed"
#: A gunicorn config whose workers record the modules they import late.
IMPORTS_HOOK = Path(__file__).resolve().parent / "gunicorn_imports.py"
WORKERS = {
    "gthread": "--worker-class gthread --workers 2 --threads 4 --preload",
    "gevent": "--worker-class gevent --workers 2 --worker-connections 100",
}


class Site(Served):
    """gunicorn serving flask_example, with its log."""

    def __init__(self, flags: str, env: dict[str, str], log: Path) -> None:
        port = free_port()
        self.imports = log.parent / f"{log.stem}-imports"
        self.imports.mkdir()
        self.preload = "--preload" in flags
        command = [
            str(BIN / "gunicorn"),
            *flags.split(),
            *f"--no-control-socket --bind 127.0.0.1:{port} --config {IMPORTS_HOOK}".split(),
            "app:app",
        ]
        env = {**env, "IMPORTS_AFTER_FORK_DIR": str(self.imports)}
        super().__init__(command, cwd=EXAMPLE, env=env, log=log, port=port)

    def summarize(self, documents: list[str], path: str = "/api/summarize") -> httpx.Response:
        return httpx.post(self.url + path, json={"documents": documents}, timeout=60)


@pytest.fixture(scope="module")
def llm() -> Iterator[SimulatedServer]:
    with serve(latency=0.3) as server:
        yield server


@pytest.fixture(scope="module")
def sites(llm: SimulatedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    env = {
        **os.environ,
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "test",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("FLASK_APP", None)
    logs = tmp_path_factory.mktemp("gunicorn")
    started = {}
    try:
        for name, flags in WORKERS.items():
            started[name] = Site(flags, env, logs / f"{name}.log")
        for site in started.values():
            site.wait_until_up()
        yield started
    finally:
        for site in started.values():
            site.stop()


@pytest.fixture(params=list(WORKERS))
def site(request: pytest.FixtureRequest, sites: dict[str, Site]) -> Site:
    return sites[request.param]


def check_summaries(body: dict, documents: list[str]) -> None:
    summaries = body["summaries"]
    assert [s["index"] for s in summaries] == list(range(len(documents)))
    for summary, document in zip(summaries, documents, strict=True):
        assert summary["error"] is None
        assert summary["summary"].startswith("digest=" + expected_digest(document))


def test_twenty_documents_in_order_ten_at_a_time(site: Site, llm: SimulatedServer) -> None:
    documents = [f"Document {i}: the quarterly report, part {i}." for i in range(20)]
    llm.reset()
    response = site.summarize(documents)
    assert response.status_code == 200, response.text
    body = response.json()
    check_summaries(body, documents)
    assert body["concurrency"] == 10
    assert llm.stats()["max_in_flight"] == 10


def test_the_stream_yields_every_summary(site: Site) -> None:
    documents = [f"streamed {i}" for i in range(4)]
    response = site.summarize(documents, path="/api/summarize/stream")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = response.text.splitlines()
    assert len(lines) == len(documents) + 1
    assert '"done": true' in lines[-1]


def test_bad_input_gets_400(site: Site) -> None:
    headers = {"content-type": "application/json"}
    response = httpx.post(site.url + "/api/summarize", content=b"not json", headers=headers)
    assert response.status_code == 400
    assert "not JSON" in response.json()["error"]


def test_a_hostile_body_gets_400_not_a_server_error(site: Site) -> None:
    headers = {"content-type": "application/json"}
    response = httpx.post(site.url + "/api/summarize", content=DEEP, headers=headers, timeout=30)
    assert response.status_code == 400
    assert "nests too deeply" in response.json()["error"]


def test_a_body_without_a_content_type_gets_415(site: Site) -> None:
    response = httpx.post(site.url + "/api/summarize", content=b'{"documents": ["a"]}')
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["error"]


def test_no_request_imports_the_sdk(site: Site) -> None:
    """gthread --preload: the master imported the SDK and its HTTP stack before fork.
    gevent, without --preload: each worker imported them loading the app, before its
    first request."""
    with httpx.Client(timeout=60) as client:
        for i in range(20):
            if len(list(site.imports.glob("*.json"))) == 2:
                break
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                documents = [{"documents": [f"r{i}-{n}"]} for n in range(8)]
                list(
                    pool.map(lambda d: client.post(site.url + "/api/summarize", json=d), documents)
                )
    records = list(site.imports.glob("*.json"))
    assert len(records) == 2, "not every worker answered"
    since = "after_fork" if site.preload else "after_app"
    for record in records:
        imports = json.loads(record.read_text())
        late = [n for n in imports[since] if n.split(".")[0] in {*PRELOADED, "summarizer", "app"}]
        assert late == [], f"worker {record.stem} imported {since}: {imports[since]}"
        # The record sees imports: a worker that loads the app itself imports the SDK.
        assert ("openai" in imports["after_fork"]) is not site.preload


def test_fifty_sequential_requests_give_no_closed_loops(sites: dict[str, Site]) -> None:
    def fifty(site: Site) -> set[int]:
        pids = set()
        with httpx.Client(timeout=60) as client:
            for i in range(50):
                documents = [f"request {i}"]
                response = client.post(site.url + "/api/summarize", json={"documents": documents})
                assert response.status_code == 200, response.text
                check_summaries(response.json(), documents)
                pids.add(response.json()["pid"])
        return pids

    with concurrent.futures.ThreadPoolExecutor(len(sites)) as pool:
        runs = dict(zip(sites, pool.map(fifty, sites.values()), strict=True))
    for name, site in sites.items():
        assert runs[name], name
        assert LOOP_CLOSED not in site.text(), name
        assert "Traceback" not in site.text(), f"{name}:\n{site.text()}"
