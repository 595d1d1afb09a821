"""bridge.openai(), bridge.anthropic() and bridge.wrap() over real HTTP, official SDKs.

Every client gets its own API key, so each test has its own endpoint (and controller) even
when the session shares one simulated server between tests. Nothing here asserts time:
counts come from the server's /_stats and from bridge.stats().
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pytest

import bridge
from bridge._admission._controller import OPENING_WINDOW
from bridge.testing import SimulatedServer, expected_digest

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

pytestmark = pytest.mark.slow


def new_key() -> str:
    return f"sk-test-{uuid.uuid4().hex}"


def prompt(i: int) -> str:
    return f"question number {i}"


def chat_caller(client: Any) -> Any:
    async def call(i: int) -> bool:
        reply = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": prompt(i)}]
        )
        return bool(
            reply.choices[0].message.content.startswith("digest=" + expected_digest(prompt(i)))
        )

    return call


def _hash(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:12]


def stats_for(key: str) -> bridge.EndpointStats:
    matches = [s for s in bridge.stats().values() if s.endpoint.endswith(_hash(key))]
    assert len(matches) == 1
    return matches[0]


def count_429(server: SimulatedServer) -> int:
    return int(server.stats()["status_counts"].get("429", 0))


# -- the Must-show scenarios ------------------------------------------------------------------


@pytest.mark.llm_server(rpm=1200, latency=0.2, jitter=0.05)
@pytest.mark.xdist_group("rate-limits")  # paces against rpm and counts 429s
class TestRateLimitedServer:
    """300 calls against rpm=1200 (20/s with a 1 s burst): about 15 s each, by design."""

    def test_configured_limits(self, b: bridge.Bridge, llm_server: SimulatedServer) -> None:
        key = new_key()
        client = bridge.openai(
            base_url=llm_server.base_url,
            api_key=key,
            limits=bridge.Limits(rpm=1200, max_in_flight=50),
        )
        results = b.map(chat_caller(client), range(300), concurrency=50, return_exceptions=True)
        b.run(client.close())
        assert sum(r is not True for r in results) == 0
        assert count_429(llm_server) <= 6  # at most 2% of 300
        assert llm_server.stats()["requests"] == 300
        stats = stats_for(key)
        assert stats.requests == 300 + stats.retries
        assert stats.in_flight == 0
        assert stats.queued == 0

    def test_learned_limits(self, b: bridge.Bridge, llm_server: SimulatedServer) -> None:
        key = new_key()
        client = bridge.openai(base_url=llm_server.base_url, api_key=key)
        results = b.map(chat_caller(client), range(300), concurrency=50, return_exceptions=True)
        b.run(client.close())
        assert sum(r is not True for r in results) == 0
        assert count_429(llm_server) <= 6
        assert stats_for(key).rpm == 1200.0  # learned from x-ratelimit-limit-requests


@pytest.mark.llm_server(error_rates={500: 0.05}, reset_rate=0.02, seed=7)
def test_faults_all_results_match(b: bridge.Bridge, llm_server: SimulatedServer) -> None:
    key = new_key()
    client = bridge.openai(
        base_url=llm_server.base_url,
        api_key=key,
        limits=bridge.Limits(rpm=None, tpm=None, max_in_flight=32),
        retry=bridge.Retry(attempts=8, backoff=0.05, max_wait=1.0),
    )
    results = b.map(chat_caller(client), range(500), concurrency=32)
    b.run(client.close())
    assert results == [True] * 500
    server = llm_server.stats()
    failures = server["faults"].get("status:500", 0) + server["faults"].get("reset", 0)
    assert server["faults"].get("reset", 0) > 0
    assert server["status_counts"]["500"] > 0
    assert stats_for(key).retries == failures  # one retry per injected failure, no more


# -- retry policy -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(
    b: bridge.Bridge, status: int, request: pytest.FixtureRequest
) -> None:
    from bridge.testing import serve

    with serve(error_rates={status: 1.0}) as server:
        client = bridge.openai(base_url=server.base_url, api_key=new_key())
        with pytest.raises(openai.APIStatusError) as caught:
            b.run(chat_caller(client)(0))
        b.run(client.close())
        assert caught.value.status_code == status
        assert server.stats()["status_counts"] == {str(status): 1}


@pytest.mark.llm_server(error_rates={503: 1.0})
def test_server_errors_retried_then_handed_to_sdk(
    b: bridge.Bridge, llm_server: SimulatedServer
) -> None:
    key = new_key()
    client = bridge.openai(
        base_url=llm_server.base_url, api_key=key, retry=bridge.Retry(attempts=3, backoff=0)
    )
    with pytest.raises(openai.InternalServerError):
        b.run(chat_caller(client)(0))
    b.run(client.close())
    assert llm_server.stats()["status_counts"] == {"503": 3}  # 3 attempts, SDK retries off
    assert stats_for(key).retries == 2


@pytest.mark.llm_server(error_rates={429: 1.0})
def test_retry_after_is_honoured(
    b: bridge.Bridge, llm_server: SimulatedServer, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_key()
    client = bridge.openai(
        base_url=llm_server.base_url,
        api_key=key,
        limits=bridge.Limits(rpm=None, tpm=None),
        retry=bridge.Retry(attempts=3, backoff=0.001, max_wait=30),
    )
    caplog.set_level(logging.INFO, logger="bridge")
    with pytest.raises(openai.RateLimitError):
        b.run(chat_caller(client)(0))
    b.run(client.close())
    waits = [r.bridge_retry_wait for r in caplog.records if hasattr(r, "bridge_retry_wait")]
    # The injected 429 says retry-after-ms: 1000; the backoff alone would be ~1 ms.
    assert waits == [1.0, 1.0]
    assert llm_server.stats()["status_counts"] == {"429": 3}
    assert stats_for(key).rate_limited == 3


@pytest.mark.llm_server(error_rates={429: 1.0})
def test_max_wait_caps_retry_after(
    b: bridge.Bridge, llm_server: SimulatedServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = bridge.openai(
        base_url=llm_server.base_url,
        api_key=new_key(),
        limits=bridge.Limits(rpm=None, tpm=None),
        retry=bridge.Retry(attempts=2, backoff=0, max_wait=0.01),
    )
    caplog.set_level(logging.INFO, logger="bridge")
    with pytest.raises(openai.RateLimitError):
        b.run(chat_caller(client)(0))
    b.run(client.close())
    waits = [r.bridge_retry_wait for r in caplog.records if hasattr(r, "bridge_retry_wait")]
    assert waits == [0.01]


@pytest.mark.llm_server(stream_cut_rate=1.0)
def test_stream_that_began_is_never_retried(b: bridge.Bridge, llm_server: SimulatedServer) -> None:
    key = new_key()
    client = bridge.openai(base_url=llm_server.base_url, api_key=key)

    async def consume() -> str:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        async with stream:
            parts = [
                (chunk.choices[0].delta.content or "") if chunk.choices else ""
                async for chunk in stream
            ]
        return "".join(parts)

    with pytest.raises(Exception) as caught:  # noqa: PT011 - the SDK's error type varies
        b.run(consume())
    b.run(client.close())
    assert not isinstance(caught.value, AssertionError)
    assert llm_server.stats()["requests"] == 1
    stats = stats_for(key)
    assert stats.retries == 0
    assert stats.in_flight == 0


@pytest.mark.llm_server
def test_stream_usage_counted_and_slot_freed(b: bridge.Bridge, llm_server: SimulatedServer) -> None:
    key = new_key()
    client = bridge.openai(base_url=llm_server.base_url, api_key=key)

    async def consume() -> str:
        stream = await client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        return "".join(parts)

    text = b.run(consume())
    b.run(client.close())
    assert text.startswith("digest=" + expected_digest("hello"))
    stats = stats_for(key)
    server = llm_server.stats()
    assert (stats.tokens_in, stats.tokens_out) == (server["tokens_in"], server["tokens_out"])
    assert stats.in_flight == 0


# -- secrets ---------------------------------------------------------------------------------


@pytest.mark.llm_server(rpm=120, error_rates={500: 0.2}, seed=3)
def test_key_never_logged_or_shown(
    b: bridge.Bridge, llm_server: SimulatedServer, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_key()
    caplog.set_level(logging.DEBUG, logger="bridge")
    client = bridge.openai(
        base_url=llm_server.base_url,
        api_key=key,
        retry=bridge.Retry(attempts=10, backoff=0.01),
    )
    assert b.map(chat_caller(client), range(6), concurrency=6) == [True] * 6
    b.run(client.close())
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("bridge")]
    assert any("retry" in m for m in messages)  # something was logged
    assert all(key not in m and prompt(0) not in m for m in messages)
    assert key not in repr(bridge.stats())
    assert key not in repr(client._client._transport)


# -- user-built clients, sync and async ---------------------------------------------------------


@pytest.mark.llm_server(rpm=600, latency=0.05)
def test_wrapped_sync_client_through_map(b: bridge.Bridge, llm_server: SimulatedServer) -> None:
    key = new_key()
    sync = bridge.wrap(
        openai.OpenAI(base_url=llm_server.base_url, api_key=key),
        limits=bridge.Limits(rpm=600, max_in_flight=8),
    )
    assert sync.max_retries == 0

    def call(i: int) -> bool:
        reply = sync.chat.completions.create(
            model="m", messages=[{"role": "user", "content": prompt(i)}]
        )
        return bool(
            reply.choices[0].message.content.startswith("digest=" + expected_digest(prompt(i)))
        )

    assert b.map(call, range(40), concurrency=16) == [True] * 40
    sync.close()
    assert count_429(llm_server) == 0
    stats = stats_for(key)
    assert stats.requests == 40
    assert stats.in_flight == 0


@pytest.mark.llm_server(rpm=600)
def test_wrapped_async_client_shares_the_endpoint(
    b: bridge.Bridge, llm_server: SimulatedServer
) -> None:
    key = new_key()
    ours = bridge.openai(base_url=llm_server.base_url, api_key=key, limits=bridge.Limits(rpm=600))
    theirs = bridge.wrap(
        openai.AsyncOpenAI(base_url=llm_server.base_url, api_key=key),
        limits=bridge.Limits(rpm=600),
    )
    assert b.map(chat_caller(ours), range(15), concurrency=15) == [True] * 15
    assert b.map(chat_caller(theirs), range(15), concurrency=15) == [True] * 15
    b.run(ours.close())
    b.run(theirs.close())
    assert count_429(llm_server) == 0
    assert stats_for(key).requests == 30  # one controller for both clients


@pytest.mark.llm_server(rpm=600, latency=0.05)
def test_anthropic_learns_from_its_headers(b: bridge.Bridge, llm_server: SimulatedServer) -> None:
    key = new_key()
    client = bridge.anthropic(base_url=llm_server.root_url, api_key=key)

    async def call(i: int) -> bool:
        reply = await client.messages.create(
            model="m", max_tokens=32, messages=[{"role": "user", "content": prompt(i)}]
        )
        return bool(reply.content[0].text.startswith("digest=" + expected_digest(prompt(i))))

    assert b.map(call, range(30), concurrency=30) == [True] * 30
    # Cold, the opening window sends 24 before anything is known; rpm 600 takes 10.
    assert count_429(llm_server) <= OPENING_WINDOW - 10
    stats = stats_for(key)
    assert stats.rpm == 600
    assert stats.tokens_in == llm_server.stats()["tokens_in"]
    llm_server.reset()
    assert b.map(call, range(30, 60), concurrency=30) == [True] * 30
    b.run(client.close())
    assert count_429(llm_server) == 0  # learned: paced from then on


@pytest.mark.llm_server
def test_httpx_transport_choice(b: bridge.Bridge, llm_server: SimulatedServer) -> None:
    client = bridge.openai(base_url=llm_server.base_url, api_key=new_key(), transport="httpx")
    assert b.map(chat_caller(client), range(5)) == [True] * 5
    b.run(client.close())
    with pytest.raises(ValueError, match="transport must be"):
        bridge.openai(api_key="k", transport="curl")  # type: ignore[arg-type]


# Clients on loops that are not a bridge's (asyncio.run, a transport of your own): test_hop.py


# -- lifecycle: clean close, fork -------------------------------------------------------------

_SCRIPT_HEAD = """
import os, sys, warnings, bridge
warnings.simplefilter("always")
base_url = sys.argv[1]
client = bridge.openai(base_url=base_url, api_key="sk-lifecycle")  # at import time

async def call(i):
    messages = [{"role": "user", "content": str(i)}]
    r = await client.chat.completions.create(model="m", messages=messages)
    return r.choices[0].message.content.startswith("digest=")
"""


def run_script(body: str, server: SimulatedServer) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(_SCRIPT_HEAD) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-X", "dev", "-c", code, server.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.llm_server
def test_no_unclosed_session_at_exit(llm_server: SimulatedServer) -> None:
    done = run_script(
        """
        assert all(bridge.map(call, range(20), concurrency=10))
        print("ok")
        """,
        llm_server,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert "Unclosed" not in done.stderr
    assert "ResourceWarning" not in done.stderr


@pytest.mark.llm_server
def test_forked_child_rebuilds_clients(llm_server: SimulatedServer) -> None:
    done = run_script(
        """
        assert all(bridge.map(call, range(5)))
        pid = os.fork()
        if pid == 0:
            ok = all(bridge.map(call, range(5)))
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert all(bridge.map(call, range(5)))  # the parent's connections still work
        print("ok")
        """,
        llm_server,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert "Unclosed" not in done.stderr
    assert llm_server.stats()["requests"] == 15
