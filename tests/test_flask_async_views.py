"""Side by side: Flask's own ``async def`` view with a shared ``AsyncOpenAI`` client, and
a sync view on the bridge, each asked five times in a row.

Flask runs every ``async def`` view through asgiref's ``async_to_sync``, on a new event
loop per request. A client made once, at module level, pools its connections on the loop
of the first request; that loop is closed when the request ends, and the next request's
reuse of the pooled connection fails. The bridge runs every request's calls on its one
long-lived loop. If a newer Flask stops failing, the first test says so instead.

The Flask view runs in a fresh interpreter (``tests/flask_async_view.py``): run in the
suite's own process after the other tests, every request answered (a state one of them
leaves behind; not traced further), which would hide what a fresh app does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, request

import bridge
from bridge.flask import Bridge
from bridge.testing import SimulatedServer, expected_digest

LOOP_CLOSED = "Event loop is closed"
REQUESTS = 5


@pytest.fixture(autouse=True)
def keep_default() -> Iterator[None]:
    outside = bridge.get_default()
    yield
    installed = bridge.set_default(outside)
    if installed is not None and installed is not outside:
        installed.close()


def ask(app: Flask, path: str) -> list[str]:
    """What each of REQUESTS requests saw: the answer, or the error it raised."""
    seen = []
    with app.test_client() as http:
        for i in range(REQUESTS):
            try:
                seen.append(http.get(f"{path}?q=question {i}").text)
            except Exception as exc:
                seen.append(f"{type(exc).__name__}: {exc}")
    return seen


def answers(i: int) -> str:
    return f"digest={expected_digest(f'question {i}')}"


def test_flasks_async_view_with_a_shared_client_fails_on_repeated_requests(
    llm_server: SimulatedServer,
) -> None:
    script = Path(__file__).with_name("flask_async_view.py")
    run = subprocess.run(
        [sys.executable, str(script), llm_server.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(run.stdout)
    assert len(seen) == REQUESTS
    assert seen[0].startswith(answers(0))
    failed = [i for i, s in enumerate(seen) if LOOP_CLOSED in s]
    if failed:
        # Flask 3.1.3, asgiref 3.13: the second request reuses the connection pooled on
        # the first request's loop, which is closed; the pool then drops it, so failures
        # alternate with successes. Every other request answers correctly.
        assert failed[0] == 1, seen
        for i, s in enumerate(seen):
            assert i in failed or s.startswith(answers(i)), seen
    else:  # pragma: no cover - a Flask that keeps one loop would land here: record it
        assert all(s.startswith(answers(i)) for i, s in enumerate(seen)), seen
        pytest.xfail(f"this Flask no longer fails on repeated requests: {seen}")


def test_the_bridge_view_answers_every_request(llm_server: SimulatedServer) -> None:
    app = Flask(__name__)
    ext = Bridge(app)
    with app.app_context():
        shared = ext.openai(base_url=llm_server.base_url, api_key="test")

    @app.get("/bridge")
    def view() -> str:
        async def one() -> str:
            reply = await shared.chat.completions.create(
                model="m", messages=[{"role": "user", "content": request.args["q"]}]
            )
            return reply.choices[0].message.content or ""

        return ext.run(one())

    seen = ask(app, "/bridge")
    assert [s.split()[0] for s in seen] == [answers(i) for i in range(REQUESTS)]


def test_an_async_view_with_a_bridge_client_answers_every_request(
    llm_server: SimulatedServer,
) -> None:
    """The same async view as in the first test, with a bridge client: each request's loop
    is new, and its calls hop to the bridge's loop, where the connections live."""
    app = Flask(__name__)
    ext = Bridge(app)
    with app.app_context():
        shared = ext.openai(base_url=llm_server.base_url, api_key="test")

    @app.get("/async")
    async def view() -> str:
        reply = await shared.chat.completions.create(
            model="m", messages=[{"role": "user", "content": request.args["q"]}]
        )
        return reply.choices[0].message.content or ""

    seen = ask(app, "/async")
    assert [s.split()[0] for s in seen] == [answers(i) for i in range(REQUESTS)]
    assert llm_server.stats()["requests"] == REQUESTS
