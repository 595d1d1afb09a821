"""StreamingHttpResponse(bridge.iterate(...)) from a sync view."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.test import Client, override_settings

from bridge.testing import SimulatedServer, Stats, expected_digest

from .conftest import ALL_DATABASES

pytestmark = ALL_DATABASES


def settled(server: SimulatedServer, condition: Callable[[Stats], bool]) -> Stats:
    """Poll the stats until ``condition`` holds; the server sees a disconnect slightly later."""
    deadline = time.monotonic() + 30
    while True:
        stats = server.stats()
        if condition(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


def test_tokens_stream_through_the_response(llm_server: SimulatedServer) -> None:
    with override_settings(LLM_BASE_URL=llm_server.base_url):
        response = Client().get("/stream")
        assert response.streaming
        chunks = list(response.streaming_content)
    assert len(chunks) > 2  # token by token, not one body
    assert b"".join(chunks).decode().startswith(f"digest={expected_digest('hi')} ")
    assert llm_server.stats()["disconnected"] == 0


@pytest.mark.llm_server(chunk_delay=0.05)
def test_closing_the_response_early_stops_the_upstream_stream(
    llm_server: SimulatedServer,
) -> None:
    with override_settings(LLM_BASE_URL=llm_server.base_url):
        response = Client().get("/stream")
        content = iter(response.streaming_content)
        first = next(content)
        response.close()  # what the WSGI server does when the client goes away
    assert first
    stats = settled(llm_server, lambda s: s["disconnected"] == 1 and s["in_flight"] == 0)
    assert stats["disconnected"] == 1
    assert stats["in_flight"] == 0
