"""flask_example through Flask's test client: the JSON API, its 400s and 502, the NDJSON
stream, the page and ``flask summarize``, against the simulated LLM server."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from example_apps import HOSTILE, NOT_JSON_TYPES, TOO_BIG, documented_reply
from flask import Flask
from flask.testing import FlaskClient

import bridge
from bridge.testing import SimulatedServer, expected_digest, serve

EXAMPLE = Path(__file__).resolve().parent.parent / "flask_example"


@pytest.fixture(scope="module")
def summarizer() -> Iterator[ModuleType]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        yield importlib.import_module("summarizer")
    finally:
        sys.path.remove(str(EXAMPLE))


@pytest.fixture
def app(summarizer: ModuleType, llm_server: SimulatedServer) -> Iterator[Flask]:
    outside = bridge.get_default()
    app = summarizer.create_app(LLM_BASE_URL=llm_server.base_url, LLM_API_KEY="test")
    yield app
    bridge.set_default(outside)
    with app.app_context():
        app.extensions["bridge"].bridge.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def check_summaries(body: dict, documents: list[str]) -> None:
    summaries = body["summaries"]
    assert [s["index"] for s in summaries] == list(range(len(documents)))
    for summary, document in zip(summaries, documents, strict=True):
        assert summary["error"] is None
        assert summary["summary"].startswith("digest=" + expected_digest(document))


@pytest.mark.llm_server(latency=0.1)
def test_the_api_summarises_concurrently_in_input_order(
    client: FlaskClient, llm_server: SimulatedServer
) -> None:
    documents = [f"document {i}" for i in range(12)]
    response = client.post("/api/summarize", json={"documents": documents})
    assert response.status_code == 200, response.text
    body = response.get_json()
    check_summaries(body, documents)
    assert body["concurrency"] == 10
    assert body["usage"]["total_tokens"] > body["usage"]["prompt_tokens"] > 0
    assert llm_server.stats()["max_in_flight"] == 10


@pytest.mark.llm_server(latency=0.05)
def test_sequential_mode_runs_one_at_a_time(
    client: FlaskClient, llm_server: SimulatedServer
) -> None:
    response = client.post(
        "/api/summarize", json={"documents": ["a", "b", "c"], "mode": "sequential"}
    )
    check_summaries(response.get_json(), ["a", "b", "c"])
    assert llm_server.stats()["max_in_flight"] == 1


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"documents": []}', "non-empty list"),
        (b'{"documents": ["a", 3]}', "documents[1] must be a string"),
        (b'{"documents": ["a"], "mode": "fast"}', "mode must be one of"),
        (json.dumps({"documents": ["a"] * 51}).encode(), "at most 50 documents"),
        (json.dumps({"documents": ["x" * 20_001]}).encode(), "the limit is 20000"),
    ],
)
def test_bad_input_gets_400_with_a_json_error(client: FlaskClient, body: bytes, error: str) -> None:
    for path in ("/api/summarize", "/api/summarize/stream"):
        response = client.post(path, data=body, content_type="application/json")
        assert response.status_code == 400
        assert error in response.get_json()["error"]


@pytest.mark.parametrize(("body", "error"), HOSTILE)
def test_hostile_bodies_get_400_with_a_json_error(
    client: FlaskClient, body: bytes, error: str
) -> None:
    for path in ("/api/summarize", "/api/summarize/stream"):
        response = client.post(path, data=body, content_type="application/json")
        assert response.status_code == 400, response.text[:300]
        assert response.mimetype == "application/json"
        assert error in response.get_json()["error"]


@pytest.mark.parametrize("content_type", NOT_JSON_TYPES)
def test_a_body_that_is_not_application_json_gets_415(
    client: FlaskClient, content_type: str | None
) -> None:
    body = json.dumps({"documents": ["a"]}).encode()
    for path in ("/api/summarize", "/api/summarize/stream"):
        response = client.post(path, data=body, content_type=content_type)
        assert response.status_code == 415
        assert "Content-Type: application/json" in response.get_json()["error"]


def test_a_body_over_the_size_limit_gets_413(client: FlaskClient) -> None:
    response = client.post("/api/summarize", data=TOO_BIG, content_type="application/json")
    assert response.status_code == 413
    assert "over 8,000,000 bytes" in response.get_json()["error"]


@pytest.mark.llm_server(latency=0.01)
def test_the_reply_has_the_shape_docs_flask_md_gives(client: FlaskClient) -> None:
    reply, summary = documented_reply("flask.md")
    response = client.post("/api/summarize", json={"documents": ["one", "two"]})
    assert response.status_code == 200, response.text
    body = response.get_json()
    assert set(body) == reply
    for each in body["summaries"]:
        assert set(each) == summary
        assert each["done_s"] > 0


def test_debug_is_off_unless_flask_debug_asks(
    summarizer: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    assert summarizer.create_app(LLM_BASE_URL="http://127.0.0.1:9/v1").debug is False
    monkeypatch.setenv("FLASK_DEBUG", "1")
    assert summarizer.create_app(LLM_BASE_URL="http://127.0.0.1:9/v1").debug is True


def test_create_app_makes_the_client_before_any_request(
    summarizer: ModuleType, llm_server: SimulatedServer
) -> None:
    """So that under gunicorn --preload the master makes it, before fork."""
    app = summarizer.create_app(LLM_BASE_URL=llm_server.base_url, LLM_API_KEY="test")
    made = app.extensions["summarizer.client"]
    assert str(made.base_url).rstrip("/") == llm_server.base_url.rstrip("/")
    with app.app_context():
        assert summarizer.llm.client() is made
    assert llm_server.stats()["requests"] == 0


def test_upstream_failure_gets_502_and_keeps_the_successes(summarizer: ModuleType) -> None:
    outside = bridge.get_default()
    with serve(error_rates={400: 0.5}, seed=3) as failing:
        app = summarizer.create_app(LLM_BASE_URL=failing.base_url, LLM_API_KEY="test")
        documents = [f"doc {i}" for i in range(10)]
        response = app.test_client().post("/api/summarize", json={"documents": documents})
    bridge.set_default(outside)
    assert response.status_code == 502
    body = response.get_json()
    failed = [s for s in body["summaries"] if s["error"]]
    kept = [s for s in body["summaries"] if not s["error"]]
    assert failed
    assert kept
    assert body["error"] == f"the LLM failed for {len(failed)} of 10 documents"
    for summary in kept:
        assert summary["summary"].startswith(
            "digest=" + expected_digest(documents[summary["index"]])
        )


def test_the_stream_yields_every_summary_then_the_totals(client: FlaskClient) -> None:
    documents = [f"streamed {i}" for i in range(6)]
    response = client.post("/api/summarize/stream", json={"documents": documents})
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    *summaries, totals = [json.loads(line) for line in response.text.splitlines()]
    assert totals["done"] is True
    assert totals["usage"]["total_tokens"] > 0
    check_summaries({"summaries": sorted(summaries, key=lambda s: s["index"])}, documents)


def test_the_page_lists_the_samples(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert 'id="run-bridge"' in response.text
    assert "/api/summarize/stream" in response.text
    assert "news (20 documents)" in response.text


def test_flask_summarize_prints_each_files_summary(app: Flask, tmp_path: Path) -> None:
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    for file in files:
        file.write_text(f"the contents of {file.name}")
    result = app.test_cli_runner().invoke(args=["summarize", *map(str, files)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "\t" in line]
    for line, file in zip(lines, files, strict=True):
        name, summary = line.split("\t")
        assert name == str(file)
        assert summary.startswith("digest=" + expected_digest(file.read_text()))
    assert "2 documents in" in result.stderr


def test_flask_summarize_rejects_no_documents(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["summarize"], input="")
    assert result.exit_code == 2
    assert "non-empty list" in result.output
