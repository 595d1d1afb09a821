"""Both examples under gunicorn's sync worker, the endpoint's quota spent: a view that cannot
finish before the request deadline answers 503 with ``Retry-After`` at once, unsent.

The simulated server allows one request a minute. The priming request spends it; the next
one would wait about a minute for the quota, past the default deadline (25 s) and past
gunicorn's default worker ``--timeout`` (30 s), after which a sync worker is killed. With
the deadline it is refused before sending: the evidence is the server's counters (nothing
more arrived), the JSON 503 itself (a killed worker answers nothing), gunicorn's log (no
``WORKER TIMEOUT``) and the pid of the one worker that served every request.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from example_apps import Served, free_port

from bridge.testing import SimulatedServer, serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: Each worker writes <pid>.json after each request it served.
IMPORTS_HOOK = Path(__file__).resolve().parent / "gunicorn_imports.py"
#: One sync worker, gunicorn's default --timeout (30 s): a request blocked past it is killed.
FLAGS = "--worker-class sync --workers 1 --no-control-socket"
APPS = {
    "django": (ROOT / "django_example", "example.wsgi"),
    "flask": (ROOT / "flask_example", "app:app"),
}


class Site(Served):
    """gunicorn serving one example, with its log and its workers' request records."""

    def __init__(self, app: str, env: dict[str, str], tmp: Path) -> None:
        cwd, target = APPS[app]
        port = free_port()
        self.served = tmp / "served"
        self.served.mkdir()
        command = [
            str(BIN / "gunicorn"),
            *FLAGS.split(),
            *f"--bind 127.0.0.1:{port} --config {IMPORTS_HOOK} {target}".split(),
        ]
        env = {**env, "IMPORTS_AFTER_FORK_DIR": str(self.served)}
        super().__init__(command, cwd=cwd, env=env, log=tmp / "gunicorn.log", port=port)

    def workers(self) -> set[int]:
        """The pids of the workers that served a request (each writes <pid>.json)."""
        return {int(path.stem) for path in self.served.glob("*.json")}

    def summarize(self, document: str) -> httpx.Response:
        return httpx.post(self.url + "/api/summarize", json={"documents": [document]}, timeout=90)


@pytest.fixture
def llm() -> Iterator[SimulatedServer]:
    with serve(latency=0.05, rpm=1) as server:
        yield server


def environment(app: str, llm: SimulatedServer, tmp: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "test",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DJANGO_SETTINGS_MODULE", "DJANGO_DEBUG", "FLASK_APP"):
        env.pop(name, None)
    if app == "django":
        env["DATABASE_URL"] = f"sqlite:///{tmp / 'db.sqlite3'}"
        cwd = APPS[app][0]
        migrate = [sys.executable, "manage.py", "migrate", "--verbosity", "0"]
        subprocess.run(migrate, cwd=cwd, env=env, check=True, timeout=60)
    return env


@pytest.fixture(params=list(APPS))
def site(request: pytest.FixtureRequest, llm: SimulatedServer, tmp_path: Path) -> Iterator[Site]:
    app = request.param
    started = Site(app, environment(app, llm, tmp_path), tmp_path)
    try:
        started.wait_until_up()
        yield started
    finally:
        started.stop()


def test_a_view_past_the_deadline_answers_503_at_once_and_keeps_its_worker(
    site: Site, llm: SimulatedServer
) -> None:
    primed = site.summarize("The quarterly report.")
    assert primed.status_code == 200, primed.text  # it spent the minute's only request
    worker = primed.json()["pid"]
    sent = llm.stats()["requests"]
    assert sent == 1

    refused = site.summarize("The annual report.")

    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"].startswith("application/json")
    retry_after = refused.headers["retry-after"]
    assert retry_after.isdigit()
    assert int(retry_after) >= 1
    assert refused.json()["retry_after"] == int(retry_after)
    assert "deadline" in refused.json()["error"]
    stats = llm.stats()
    assert stats["requests"] == sent  # nothing more reached the server ...
    assert stats["rate_limited"] == 0  # ... not even to be refused there
    # The same worker serves the next request: it was never killed and replaced.
    assert site.summarize("The monthly report.").status_code == 503
    assert site.answers()
    assert site.workers() == {worker}
    assert "WORKER TIMEOUT" not in site.text()
    assert site.text().count("Booting worker") == 1
