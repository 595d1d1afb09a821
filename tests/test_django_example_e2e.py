"""django_example served for real: gunicorn (gthread, 4 workers, --preload), uvicorn, and
the page in headless Chromium, all against the simulated LLM server at 0.3 s latency, on
the example's defaults (SQLite, DEBUG off).

Nothing here measures time: concurrency shows in the simulated server's ``max_in_flight``.
``django_example/bench_api.py`` measures the speed.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from example_apps import (
    HOSTILE,
    NOT_JSON_TYPES,
    PRELOADED,
    TOO_BIG,
    Served,
    documented_reply,
    free_port,
)

from bridge.testing import SimulatedServer, expected_digest, serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "django_example"
#: A gunicorn config whose workers record the modules they import after fork.
IMPORTS_HOOK = Path(__file__).resolve().parent / "gunicorn_imports.py"
BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
LOOP_CLOSED = "Event loop is closed"


class Site(Served):
    """A server process running django_example, with its log."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path, port: int) -> None:
        super().__init__(command, cwd=EXAMPLE, env=env, log=log, port=port)

    def summarize(self, documents: list[str], path: str = "/api/summarize", **extra: str):
        return httpx.post(self.url + path, json={"documents": documents, **extra}, timeout=60)

    def post(self, body: bytes, path: str = "/api/summarize", **headers: str) -> httpx.Response:
        headers.setdefault("content-type", "application/json")
        return httpx.post(self.url + path, content=body, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def llm() -> Iterator[SimulatedServer]:
    with serve(latency=0.3) as server:
        yield server


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("example") / "db.sqlite3"


@pytest.fixture(scope="module")
def site_env(
    llm: SimulatedServer, database: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The example's environment, pointed at the simulated server, with a migrated SQLite.

    SQLite, as by default, in a file of the test's own; DEBUG is left to its default.
    """
    env = {
        **os.environ,
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "test",
        "DATABASE_URL": f"sqlite:///{database}",
        "PYTHONUNBUFFERED": "1",
        "IMPORTS_AFTER_FORK_DIR": str(tmp_path_factory.mktemp("imports")),
    }
    for name in ("DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG"):
        env.pop(name, None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=EXAMPLE,
        env=env,
        check=True,
        timeout=60,
    )
    return env


@pytest.fixture(scope="module")
def gunicorn(site_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    port = free_port()
    flags = (
        "--worker-class gthread --workers 4 --threads 4 --preload --no-control-socket "
        f"--bind 127.0.0.1:{port} --config {IMPORTS_HOOK} example.wsgi"
    )
    command = [str(BIN / "gunicorn"), *flags.split()]
    site = Site(command, site_env, tmp_path_factory.mktemp("gunicorn") / "log", port)
    try:
        site.wait_until_up()
        yield site
    finally:
        site.stop()


def check_summaries(body: dict, documents: list[str]) -> None:
    """Every document's summary, in input order, belongs to its document."""
    summaries = body["summaries"]
    assert [s["index"] for s in summaries] == list(range(len(documents)))
    for summary, document in zip(summaries, documents, strict=True):
        assert summary["error"] is None
        assert summary["summary"].startswith("digest=" + expected_digest(document))


class TestGunicorn:
    def test_twenty_documents_in_order_ten_at_a_time(self, gunicorn: Site, llm: SimulatedServer):
        documents = [f"Document {i}: the quarterly report, part {i}." for i in range(20)]
        llm.reset()
        response = gunicorn.summarize(documents)
        assert response.status_code == 200, response.text
        body = response.json()
        check_summaries(body, documents)
        assert body["mode"] == "bridge"
        assert body["concurrency"] == 10
        assert body["usage"]["total_tokens"] > body["usage"]["prompt_tokens"] > 0
        assert llm.stats()["max_in_flight"] == 10

    def test_the_reply_has_the_shape_docs_django_md_gives(self, gunicorn: Site):
        reply, summary = documented_reply("django.md")
        response = gunicorn.summarize(["one", "two"])
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == reply
        for each in body["summaries"]:
            assert set(each) == summary
            assert each["done_s"] > 0

    def test_sequential_mode_runs_one_at_a_time(self, gunicorn: Site, llm: SimulatedServer):
        documents = ["one", "two", "three"]
        llm.reset()
        response = gunicorn.summarize(documents, mode="sequential")
        assert response.status_code == 200, response.text
        check_summaries(response.json(), documents)
        assert llm.stats()["max_in_flight"] == 1

    def test_stream_yields_every_summary_then_the_totals(self, gunicorn: Site):
        documents = [f"streamed {i}" for i in range(6)]
        response = gunicorn.summarize(documents, path="/api/summarize/stream")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in response.text.splitlines()]
        *summaries, totals = lines
        assert totals["done"] is True
        assert totals["usage"]["total_tokens"] > 0
        check_summaries({"summaries": sorted(summaries, key=lambda s: s["index"])}, documents)

    @pytest.mark.parametrize(
        ("body", "error"),
        [
            (b"not json", "not JSON"),
            (b'{"documents": []}', "non-empty list"),
            (b'{"texts": ["a"]}', "non-empty list"),
            (b'{"documents": ["a", 3]}', "documents[1] must be a string"),
            (b'{"documents": ["a"], "mode": "fast"}', "mode must be one of"),
            (json.dumps({"documents": ["a"] * 51}).encode(), "at most 50 documents"),
            (json.dumps({"documents": ["x" * 20_001]}).encode(), "the limit is 20000"),
        ],
    )
    def test_bad_input_gets_400_with_a_json_error(self, gunicorn: Site, body: bytes, error: str):
        for path in ("/api/summarize", "/api/summarize/stream"):
            response = gunicorn.post(body, path)
            assert response.status_code == 400
            assert error in response.json()["error"]

    @pytest.mark.parametrize(("body", "error"), HOSTILE)
    def test_hostile_bodies_get_400_with_a_json_error(
        self, gunicorn: Site, body: bytes, error: str
    ):
        for path in ("/api/summarize", "/api/summarize/stream"):
            response = gunicorn.post(body, path)
            assert response.status_code == 400, response.text[:300]
            assert response.headers["content-type"] == "application/json"
            assert error in response.json()["error"]

    @pytest.mark.parametrize("content_type", NOT_JSON_TYPES)
    def test_a_body_that_is_not_application_json_gets_415(
        self, gunicorn: Site, content_type: str | None
    ):
        headers = {"content-type": content_type} if content_type else {}
        body = json.dumps({"documents": ["a"]}).encode()
        for path in ("/api/summarize", "/api/summarize/stream"):
            response = httpx.post(gunicorn.url + path, content=body, headers=headers)
            assert response.status_code == 415
            assert "Content-Type: application/json" in response.json()["error"]

    def test_a_body_over_the_size_limit_gets_413(self, gunicorn: Site):
        response = gunicorn.post(TOO_BIG)
        assert response.status_code == 413
        assert "over 8,000,000 bytes" in response.json()["error"]

    def test_debug_is_off_by_default(self, gunicorn: Site):
        response = httpx.get(gunicorn.url + "/no-such-page", timeout=30)
        assert response.status_code == 404
        # Django's debug 404 page lists the URLconf; its plain one says nothing.
        assert "URLconf" not in response.text
        assert "DEBUG = True" not in response.text

    def test_fifty_requests_no_closed_loops_and_every_worker_answers(self, gunicorn: Site):
        pids = set()
        for i in range(50):
            documents = [f"request {i}"]
            response = gunicorn.summarize(documents)
            assert response.status_code == 200, response.text
            check_summaries(response.json(), documents)
            pids.add(response.json()["pid"])
        assert LOOP_CLOSED not in gunicorn.text()
        assert "Traceback" not in gunicorn.text()
        # Which worker accepts a connection is the kernel's choice; if 50 sequential
        # requests did not reach all four, overlapping ones will.
        with httpx.Client(timeout=60) as client:
            for _ in range(10):
                if len(pids) == 4:
                    break
                pids |= parallel_pids(client, gunicorn.url, 16)
        assert len(pids) == 4


def test_hundred_concurrent_requests_all_succeed_and_overlap(
    gunicorn: Site, llm: SimulatedServer, database: Path
):
    """100 requests of 5 documents at once, on the default SQLite: no request waits for
    another's transaction, so all succeed and their LLM calls overlap."""
    llm.reset()
    before = count_rows(database)

    def one(i: int) -> httpx.Response:
        return gunicorn.summarize([f"request {i} document {d}" for d in range(5)])

    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        responses = list(pool.map(one, range(100)))
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 100, [r.text[:200] for r in responses if r.status_code != 200]
    assert llm.stats()["max_in_flight"] >= 40
    runs, finished, outcomes = count_rows(database)
    assert (runs - before[0], finished - before[1], outcomes - before[2]) == (100, 100, 500)
    assert "database is locked" not in gunicorn.text()


def count_rows(database: Path) -> tuple[int, int, int]:
    """Runs, finished runs and outcomes in the example's database."""
    with sqlite3.connect(database) as db:
        runs, finished = db.execute(
            "SELECT count(*), count(finished) FROM summaries_run"
        ).fetchone()
        (outcomes,) = db.execute("SELECT count(*) FROM summaries_outcome").fetchone()
    return runs, finished, outcomes


def test_workers_import_no_sdk_after_fork(gunicorn: Site, site_env: dict[str, str]):
    """Under --preload the master imported the SDK, its HTTP stack and the client's
    pieces: after fork, serving requests (the first one included) imports none of them."""
    records = Path(site_env["IMPORTS_AFTER_FORK_DIR"])
    with httpx.Client(timeout=60) as client:
        for _ in range(10):
            if len(list(records.glob("*.json"))) == 4:
                break
            parallel_pids(client, gunicorn.url, 16)
    assert len(list(records.glob("*.json"))) == 4, "not every worker answered"
    for record in records.glob("*.json"):
        imported = json.loads(record.read_text())["after_fork"]
        late = [n for n in imported if n.split(".")[0] in {*PRELOADED, "summaries", "example"}]
        assert late == [], f"worker {record.stem} imported after fork: {imported}"


def parallel_pids(client: httpx.Client, url: str, count: int) -> set[int]:
    def one(i: int) -> int:
        response = client.post(url + "/api/summarize", json={"documents": [f"p{i}"]})
        assert response.status_code == 200, response.text
        return int(response.json()["pid"])

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return set(pool.map(one, range(count)))


def test_upstream_failure_gets_502_and_keeps_the_successes(
    site_env: dict[str, str], tmp_path: Path
):
    """Half the calls fail for good (a 400 is not retried): 502, and the rest come back."""
    with serve(error_rates={400: 0.5}, seed=3) as failing:
        env = {**site_env, "OPENAI_BASE_URL": failing.base_url}
        port = free_port()
        command = [
            str(BIN / "gunicorn"),
            *f"--threads 2 --no-control-socket --bind 127.0.0.1:{port} example.wsgi".split(),
        ]
        site = Site(command, env, tmp_path / "log", port)
        try:
            site.wait_until_up()
            documents = [f"doc {i}" for i in range(10)]
            response = site.summarize(documents)
        finally:
            site.stop()
    assert response.status_code == 502
    body = response.json()
    failed = [s for s in body["summaries"] if s["error"]]
    kept = [s for s in body["summaries"] if not s["error"]]
    assert failed
    assert kept
    assert body["error"] == f"the LLM failed for {len(failed)} of 10 documents"
    for summary in kept:
        assert summary["summary"].startswith(
            "digest=" + expected_digest(documents[summary["index"]])
        )


def test_metrics_page_counts_the_bridge_requests(
    site_env: dict[str, str], llm: SimulatedServer, tmp_path: Path
):
    """/metrics (OpenTelemetry's Prometheus exporter) counts what the LLM server was sent.

    One worker, --preload as in production: a scrape sees only the process that answers
    it, so with one worker that is the one that made the calls (docs/operations.md)."""
    pytest.importorskip("opentelemetry.exporter.prometheus")
    port = free_port()
    flags = f"--workers 1 --threads 2 --preload --no-control-socket --bind 127.0.0.1:{port}"
    site = Site([str(BIN / "gunicorn"), *flags.split(), "example.wsgi"], site_env,
                tmp_path / "log", port)  # fmt: skip
    try:
        site.wait_until_up()
        before = bridge_requests(site.url, llm.base_url)
        llm.reset()
        response = site.summarize([f"counted {i}" for i in range(7)])
        assert response.status_code == 200, response.text
        after = bridge_requests(site.url, llm.base_url)
    finally:
        site.stop()
    assert after - before == llm.stats()["requests"] == 7


def bridge_requests(url: str, llm_url: str) -> float:
    """The ``bridge_requests_total`` samples for the endpoint at ``llm_url``, summed."""
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(url + "/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "bridge_requests_total"
        and sample.labels["bridge_endpoint"].startswith(llm_url + " key#")
    )


@pytest.fixture(scope="module")
def uvicorn(site_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    port = free_port()
    command = [
        str(BIN / "uvicorn"),
        *f"--host 127.0.0.1 --port {port} --no-access-log example.asgi:application".split(),
    ]
    site = Site(command, site_env, tmp_path_factory.mktemp("uvicorn") / "log", port)
    try:
        site.wait_until_up()
        yield site
    finally:
        site.stop()


class TestUvicorn:
    def test_async_view_awaits_the_client_on_the_servers_loop(
        self, uvicorn: Site, llm: SimulatedServer
    ):
        documents = [f"async {i}" for i in range(12)]
        llm.reset()
        response = uvicorn.summarize(documents, path="/api/async/summarize")
        assert response.status_code == 200, response.text
        check_summaries(response.json(), documents)
        assert llm.stats()["max_in_flight"] == 10

    def test_sync_view_under_asgi_uses_the_bridge(self, uvicorn: Site, llm: SimulatedServer):
        documents = [f"sync under asgi {i}" for i in range(12)]
        llm.reset()
        response = uvicorn.summarize(documents)
        assert response.status_code == 200, response.text
        check_summaries(response.json(), documents)
        assert llm.stats()["max_in_flight"] == 10
        assert LOOP_CLOSED not in uvicorn.text()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """Headless Chromium from Debian's packages; nothing is downloaded at run time."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        reason = f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        if IN_CI:
            pytest.fail(f"CI must run the browser test, but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = (
        "--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run "
        "--disable-background-networking --disable-component-update --disable-sync"
    )
    for flag in [*flags.split(), f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_runs_the_concurrent_mode_in_chromium(browser, gunicorn: Site, llm: SimulatedServer):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(gunicorn.url + "/")
    documents = [
        d.strip()
        for d in browser.find_element(By.ID, "documents").get_property("value").split("\n\n")
    ]
    assert len(documents) == 20
    llm.reset()
    browser.find_element(By.ID, "run-bridge").click()
    WebDriverWait(browser, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#timing-bridge.finished")
    )
    items = browser.find_elements(By.CSS_SELECTOR, "#results-bridge li.summary.done")
    assert len(items) == 20
    for item, document in zip(items, documents, strict=True):
        assert "digest=" in item.text
        assert item.text.startswith("digest=" + expected_digest(document))
    assert browser.find_element(By.ID, "timing-bridge").text.endswith(" s")
    assert browser.find_element(By.ID, "timing-sequential").text == ""
    assert llm.stats()["max_in_flight"] == 10
