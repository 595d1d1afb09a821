"""``BRIDGE_REQUEST_DEADLINE``: each request runs under ``bridge.deadline()``, through
Flask's test client, and a missed deadline answers 503 with ``Retry-After``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask, Response, stream_with_context

import bridge
from bridge._integration import DEFAULT_REQUEST_DEADLINE, time_left
from bridge.flask import Bridge


@pytest.fixture(autouse=True)
def keep_default() -> Iterator[None]:
    """init_app installs the app's bridge as the process default: put the old one back."""
    outside = bridge.get_default()
    yield
    installed = bridge.set_default(outside)
    if installed is not None and installed is not outside:
        installed.close()


async def seconds_left() -> float | None:
    """What a bridged coroutine sees: the bridge carries the caller's context in."""
    return time_left()


def make_app(**config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    ext = Bridge(app)

    @app.get("/left")
    def left() -> dict[str, float | None]:
        return {"left": ext.run(seconds_left())}

    @app.get("/left/async")
    async def left_async() -> dict[str, float | None]:
        return {"left": await seconds_left()}

    @app.get("/left/stream")
    def left_stream() -> Response:
        def lines() -> Iterator[str]:
            yield f"{ext.run(seconds_left())}\n"

        return Response(stream_with_context(lines()))

    @app.get("/missed")
    def missed() -> str:
        async def refused() -> None:
            # As an SDK does: its transport's DeadlineExceeded wrapped in its own error.
            cause = bridge.DeadlineExceeded("the endpoint is paused", retry_after=7.2)
            raise ConnectionError("the SDK's wrapping") from cause

        ext.run(refused())
        return "unreachable"

    return app


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), "x", "25", True, [25]])
def test_a_bad_deadline_is_refused_with_what_to_write(value: object) -> None:
    with pytest.raises(ValueError, match="BRIDGE_REQUEST_DEADLINE") as info:
        make_app(BRIDGE_REQUEST_DEADLINE=value)
    assert repr(value) in str(info.value)
    assert "--timeout" in str(info.value)


def test_the_default_is_under_gunicorns_default_timeout() -> None:
    app = make_app()
    with app.app_context():
        assert app.extensions["bridge"].config.request_deadline == DEFAULT_REQUEST_DEADLINE
    assert 0 < DEFAULT_REQUEST_DEADLINE < 30  # gunicorn's --timeout default


@pytest.mark.parametrize("path", ["/left", "/left/async"])
@pytest.mark.parametrize("seconds", [7, 20.5])
def test_a_view_runs_under_the_deadline_and_it_ends_with_the_request(
    path: str, seconds: float
) -> None:
    client = make_app(BRIDGE_REQUEST_DEADLINE=seconds).test_client()
    for _ in range(2):  # the second request gets a deadline of its own, not a leftover
        left = client.get(path).json["left"]  # type: ignore[index]
        assert 0 < left <= seconds
        assert time_left() is None  # the test client runs the request on this thread


def test_a_streamed_body_runs_after_the_deadline_closed() -> None:
    """The view returns before its body streams; the request's teardown (which Flask runs
    then, ``stream_with_context`` or not) closed the deadline, and nothing leaks."""
    client = make_app(BRIDGE_REQUEST_DEADLINE=7).test_client()
    for _ in range(2):
        response = client.get("/left/stream")
        assert response.get_data(as_text=True) == "None\n"
        assert time_left() is None


def test_none_leaves_views_unbounded() -> None:
    client = make_app(BRIDGE_REQUEST_DEADLINE=None).test_client()
    assert client.get("/left").json == {"left": None}


def test_a_missed_deadline_answers_503_with_retry_after() -> None:
    response = make_app().test_client().get("/missed")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "8"  # 7.2 s of admission wait, rounded up
    assert response.json["retry_after"] == 8  # type: ignore[index]
    assert "deadline" in response.json["error"]  # type: ignore[index]


def test_the_apps_own_handler_wins() -> None:
    app = make_app()

    @app.errorhandler(bridge.DeadlineExceeded)
    def busy(error: bridge.DeadlineExceeded) -> tuple[str, int]:
        return "busy", 429

    response = app.test_client().get("/missed")
    assert (response.status_code, response.text) == (429, "busy")
