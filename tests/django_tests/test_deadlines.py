"""``BRIDGE["request_deadline"]`` and ``DeadlineMiddleware``, through Django's test clients."""

from __future__ import annotations

import asyncio

import pytest
from django.test import AsyncClient, Client, override_settings

from bridge._integration import DEFAULT_REQUEST_DEADLINE, time_left
from bridge.django._middleware import check_middleware
from bridge.django._settings import check_bridge_settings, read_settings

MIDDLEWARE = ["bridge.django.DeadlineMiddleware"]


def problems(value: object) -> list[tuple[str, str]]:
    with override_settings(BRIDGE={"request_deadline": value}):
        return [(error.id, error.msg) for error in check_bridge_settings()]


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), "x", "25", True, [25]])
def test_a_bad_request_deadline_is_reported(value: object) -> None:
    [(found, message)] = problems(value)
    assert found == "bridge.E007"
    assert "BRIDGE['request_deadline']" in message
    assert repr(value) in message


@pytest.mark.parametrize("value", [None, 5, 2.5])
def test_a_number_of_seconds_or_none_is_valid(value: object) -> None:
    assert problems(value) == []
    with override_settings(BRIDGE={"request_deadline": value}):
        assert read_settings().request_deadline == value


def test_the_default_is_under_gunicorns_default_timeout() -> None:
    with override_settings(BRIDGE={}):
        assert read_settings().request_deadline == DEFAULT_REQUEST_DEADLINE
    assert 0 < DEFAULT_REQUEST_DEADLINE < 30  # gunicorn's --timeout default


def test_a_set_deadline_without_the_middleware_warns() -> None:
    with override_settings(BRIDGE={"request_deadline": 10}, MIDDLEWARE=[]):
        assert [w.id for w in check_middleware()] == ["bridge.W001"]
    with override_settings(BRIDGE={"request_deadline": 10}, MIDDLEWARE=MIDDLEWARE):
        assert check_middleware() == []
    with override_settings(BRIDGE={}, MIDDLEWARE=[]):
        assert check_middleware() == []  # nothing asked for


@pytest.mark.parametrize("path", ["/deadline", "/deadline/async"])
@pytest.mark.parametrize("seconds", [7, 20])
def test_a_view_runs_under_the_deadline(path: str, seconds: float) -> None:
    with override_settings(BRIDGE={"request_deadline": seconds}, MIDDLEWARE=MIDDLEWARE):
        left = Client().get(path).json()["left"]
    assert 0 < left <= seconds
    assert time_left() is None  # the scope closed with the request


@pytest.mark.parametrize("path", ["/deadline", "/deadline/async"])
def test_an_async_stack_runs_the_view_under_the_deadline(path: str) -> None:
    """As under an ASGI server: the middleware runs as a coroutine."""
    with override_settings(BRIDGE={"request_deadline": 7}, MIDDLEWARE=MIDDLEWARE):
        response = asyncio.run(AsyncClient().get(path))
    assert 0 < response.json()["left"] <= 7


def test_none_or_no_middleware_leaves_views_unbounded() -> None:
    with override_settings(BRIDGE={"request_deadline": None}, MIDDLEWARE=MIDDLEWARE):
        assert Client().get("/deadline").json()["left"] is None
    with override_settings(BRIDGE={}, MIDDLEWARE=[]):
        assert Client().get("/deadline").json()["left"] is None


@pytest.mark.parametrize(
    ("query", "retry_after"),
    [
        pytest.param("?wait=7.2", "8", id="the-admission-wait-rounded-up"),
        pytest.param("?wait=0.01", "1", id="at-least-one-second"),
        pytest.param("", "5", id="no-wait-known"),
        pytest.param("?wait=40&wrapped=1", "40", id="wrapped-by-an-sdk"),
    ],
)
def test_a_missed_deadline_answers_503_with_retry_after(query: str, retry_after: str) -> None:
    with override_settings(MIDDLEWARE=MIDDLEWARE):
        response = Client(raise_request_exception=False).get("/deadline/missed" + query)
    assert response.status_code == 503
    assert response["Retry-After"] == retry_after
    assert response.json()["retry_after"] == int(retry_after)
    assert "deadline" in response.json()["error"]
