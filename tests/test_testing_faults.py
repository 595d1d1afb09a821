"""Injected faults, each at probability 1.0, and the ``disconnected`` counter."""

from __future__ import annotations

import time
from collections.abc import Callable

import anthropic
import httpx
import openai
import pytest

from bridge.testing import SimulatedServer, Stats, expected_digest

USER = [{"role": "user", "content": "hi"}]
CHAT = {"model": "m", "messages": USER}


def settled(server: SimulatedServer, condition: Callable[[Stats], bool]) -> Stats:
    """Poll the stats until ``condition`` holds; the server sees a disconnect slightly later."""
    deadline = time.monotonic() + 30
    while True:
        stats = server.stats()
        if condition(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


def openai_client(server: SimulatedServer, timeout: float = 30) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=timeout)


def read_events(server: SimulatedServer, read_timeout: float = 30) -> tuple[list[str], Exception]:
    """Stream a chat completion with httpx; return the data lines seen and how it ended."""
    lines: list[str] = []
    timeout = httpx.Timeout(30, read=read_timeout)
    with httpx.Client(trust_env=False, timeout=timeout) as client:
        try:
            with client.stream(
                "POST", server.base_url + "/chat/completions", json={**CHAT, "stream": True}
            ) as response:
                lines.extend(line for line in response.iter_lines() if line)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as exc:
            return lines, exc
    raise AssertionError(f"the stream ended cleanly: {lines[-2:]}")


class TestDisconnected:
    @pytest.mark.llm_server(latency=30)
    def test_client_timeout_while_server_waits_on_latency(
        self, llm_server: SimulatedServer
    ) -> None:
        with (
            openai_client(llm_server, timeout=0.3) as client,
            pytest.raises(openai.APITimeoutError),
        ):
            client.chat.completions.create(model="m", messages=USER)
        stats = settled(llm_server, lambda s: s["disconnected"] == 1 and s["in_flight"] == 0)
        assert stats["disconnected"] == 1
        assert stats["in_flight"] == 0
        assert stats["requests"] == 1
        assert stats["status_counts"] == {}  # nothing was answered

    @pytest.mark.llm_server(chunk_delay=0.05)
    def test_client_closing_a_stream_mid_way(self, llm_server: SimulatedServer) -> None:
        with openai_client(llm_server) as client:
            stream = client.chat.completions.create(model="m", messages=USER, stream=True)
            first = [next(stream) for _ in range(3)]
            stream.close()
        assert first[1].choices[0].delta.content == f"digest={expected_digest('hi')} "
        stats = settled(llm_server, lambda s: s["disconnected"] == 1 and s["in_flight"] == 0)
        assert stats["disconnected"] == 1
        assert stats["tokens_out"] == 0  # the reply was never delivered in full

    def test_finished_requests_are_not_counted(self, llm_server: SimulatedServer) -> None:
        with openai_client(llm_server) as client:
            client.chat.completions.create(model="m", messages=USER)
            list(client.chat.completions.create(model="m", messages=USER, stream=True))
        stats = llm_server.stats()
        assert stats["disconnected"] == 0
        assert stats["in_flight"] == 0


class TestStatusFaults:
    @pytest.mark.llm_server(error_rates={503: 1.0})
    def test_openai_shaped_status(self, llm_server: SimulatedServer) -> None:
        with (
            openai_client(llm_server) as client,
            pytest.raises(openai.InternalServerError) as caught,
        ):
            client.chat.completions.create(model="m", messages=USER)
        assert caught.value.status_code == 503
        assert caught.value.type == "server_error"
        stats = llm_server.stats()
        assert stats["faults"] == {"status:503": 1}
        assert stats["status_counts"] == {"503": 1}

    @pytest.mark.llm_server(error_rates={529: 1.0})
    def test_anthropic_shaped_overloaded(self, llm_server: SimulatedServer) -> None:
        with (
            anthropic.Anthropic(base_url=llm_server.root_url, api_key="k", max_retries=0) as client,
            pytest.raises(anthropic.APIStatusError) as caught,
        ):
            client.messages.create(model="c", max_tokens=5, messages=USER)
        assert caught.value.status_code == 529
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["error"]["type"] == "overloaded_error"

    @pytest.mark.llm_server(error_rates={429: 1.0})
    def test_injected_429_sends_retry_after(self, llm_server: SimulatedServer) -> None:
        with openai_client(llm_server) as client, pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="m", messages=USER)
        assert caught.value.response.headers["retry-after"] == "1"
        assert caught.value.response.headers["retry-after-ms"] == "1000"
        assert llm_server.stats()["rate_limited"] == 0  # a fault, not the limiter

    @pytest.mark.llm_server(error_rates={500: 0.5}, seed=7)
    def test_seeded_faults_repeat_after_reset(self, llm_server: SimulatedServer) -> None:
        def outcomes() -> list[int]:
            with httpx.Client(trust_env=False) as client:
                return [
                    client.post(llm_server.base_url + "/chat/completions", json=CHAT).status_code
                    for _ in range(30)
                ]

        first = outcomes()
        llm_server.reset()
        assert outcomes() == first
        assert set(first) == {200, 500}


class TestConnectionFaults:
    @pytest.mark.llm_server(reset_rate=1.0)
    def test_reset_before_the_response(self, llm_server: SimulatedServer) -> None:
        with openai_client(llm_server) as client, pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="m", messages=USER)
        stats = settled(llm_server, lambda s: s["in_flight"] == 0)
        assert stats["faults"] == {"reset": 1}
        assert stats["disconnected"] == 0  # the server hung up, not the client
        assert stats["status_counts"] == {}

    @pytest.mark.llm_server(hang_rate=1.0)
    def test_hang_until_the_client_gives_up(self, llm_server: SimulatedServer) -> None:
        with (
            openai_client(llm_server, timeout=0.3) as client,
            pytest.raises(openai.APITimeoutError),
        ):
            client.chat.completions.create(model="m", messages=USER)
        stats = settled(llm_server, lambda s: s["disconnected"] == 1)
        assert stats["faults"] == {"hang": 1}
        assert stats["disconnected"] == 1
        assert stats["in_flight"] == 0

    @pytest.mark.llm_server(slow_first_byte_rate=1.0, slow_first_byte=1.0)
    def test_slow_first_byte(self, llm_server: SimulatedServer) -> None:
        with (
            openai_client(llm_server, timeout=0.2) as client,
            pytest.raises(openai.APITimeoutError),
        ):
            client.chat.completions.create(model="m", messages=USER)
        with openai_client(llm_server, timeout=30) as client:
            reply = client.chat.completions.create(model="m", messages=USER)
        assert (reply.choices[0].message.content or "").startswith("digest=")
        stats = settled(llm_server, lambda s: s["disconnected"] == 1)
        assert stats["faults"] == {"slow_first_byte": 2}
        assert stats["disconnected"] == 1


class TestStreamFaults:
    @pytest.mark.llm_server(stream_cut_rate=1.0)
    def test_stream_cut_mid_way(self, llm_server: SimulatedServer) -> None:
        lines, error = read_events(llm_server)
        assert isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError))
        assert len(lines) >= 2
        assert "data: [DONE]" not in lines
        with openai_client(llm_server) as client, pytest.raises((httpx.HTTPError, openai.APIError)):
            list(client.chat.completions.create(model="m", messages=USER, stream=True))
        # Non-streaming requests are not hit by stream faults.
        with openai_client(llm_server) as client:
            client.chat.completions.create(model="m", messages=USER)
        stats = settled(llm_server, lambda s: s["in_flight"] == 0)
        assert stats["faults"] == {"stream_cut": 2}
        assert stats["disconnected"] == 0

    @pytest.mark.llm_server(stream_stall_rate=1.0)
    def test_stream_stalls_with_the_connection_open(self, llm_server: SimulatedServer) -> None:
        lines, error = read_events(llm_server, read_timeout=0.5)
        assert isinstance(error, httpx.ReadTimeout)
        assert lines[0].startswith("data: {")
        assert "data: [DONE]" not in lines
        stats = settled(llm_server, lambda s: s["disconnected"] == 1)
        assert stats["faults"] == {"stream_stall": 1}
        assert stats["disconnected"] == 1
        assert stats["in_flight"] == 0


@pytest.mark.llm_server(hang_rate=0.2, error_rates={500: 0.1}, seed=1)
def test_docs_recipe_survives_faults(llm_server: SimulatedServer) -> None:
    """The docs' fault recipe: retries get every answer, and every hang was abandoned."""
    with openai.OpenAI(
        base_url=llm_server.base_url, api_key="k", timeout=0.2, max_retries=3
    ) as client:
        for i in range(10):
            prompt = f"question {i}"
            reply = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": prompt}]
            )
            content = reply.choices[0].message.content or ""
            assert content.startswith("digest=" + expected_digest(prompt))
    hangs = llm_server.stats()["faults"].get("hang", 0)
    assert hangs > 0
    stats = settled(llm_server, lambda s: s["disconnected"] == hangs)
    assert stats["disconnected"] == hangs
