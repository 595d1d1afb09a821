"""The SDKs' own retries on bridge clients: total attempts never exceed ``Retry.attempts``.

SDK clients built with their default ``max_retries=2`` (as LangChain and LiteLLM build
them) over a bridge HTTP client, against a server that always answers 500 or that nobody
listens on. Attempts are counted by the server (/_stats) and by bridge.stats().
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid

import pytest

import bridge
from bridge.testing import SimulatedServer

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

pytestmark = [pytest.mark.slow, pytest.mark.llm_server(error_rates={500: 1.0})]

QUICK = {"backoff": 0.01, "max_wait": 0.05}
MESSAGES = [{"role": "user", "content": "hello"}]


def new_key() -> str:
    return f"sk-sdk-retries-{uuid.uuid4().hex}"


def stats_for(key: str) -> bridge.EndpointStats:
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    [stats] = [s for s in bridge.stats().values() if s.endpoint.endswith(digest)]
    return stats


@pytest.fixture(autouse=True)
def _warning_not_yet_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning comes once per process; each test starts as a fresh process would."""
    from bridge._admission import _sdk_retries

    monkeypatch.setattr(_sdk_retries, "_warned", False)


@pytest.mark.parametrize("attempts", [1, 2, 3])
def test_async_sdk_with_its_default_retries(llm_server: SimulatedServer, attempts: int) -> None:
    http = bridge.http_client(retry=bridge.Retry(attempts=attempts, **QUICK))
    client = openai.AsyncOpenAI(base_url=llm_server.base_url, api_key=new_key(), http_client=http)
    assert client.max_retries == 2  # the SDK's default, left as frameworks leave it

    async def call() -> None:
        await client.chat.completions.create(model="m", messages=MESSAGES)

    with pytest.raises(openai.InternalServerError):
        asyncio.run(call())
    assert llm_server.stats()["status_counts"] == {"500": attempts}


def test_sync_sdk_with_its_default_retries(llm_server: SimulatedServer) -> None:
    key = new_key()
    http = bridge.http_client(sync=True, retry=bridge.Retry(attempts=3, **QUICK))
    client = openai.OpenAI(base_url=llm_server.base_url, api_key=key, http_client=http)
    results = bridge.map(
        lambda _: client.chat.completions.create(model="m", messages=MESSAGES),
        range(4),
        return_exceptions=True,
    )
    assert all(isinstance(r, openai.InternalServerError) for r in results)
    assert llm_server.stats()["requests"] == 12 == stats_for(key).requests


def test_anthropic_sdk_with_its_default_retries(llm_server: SimulatedServer) -> None:
    http = bridge.http_client(retry=bridge.Retry(attempts=2, **QUICK))
    client = anthropic.AsyncAnthropic(
        base_url=llm_server.base_url.removesuffix("/v1"), api_key=new_key(), http_client=http
    )

    async def call() -> None:
        await client.messages.create(model="m", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]

    with pytest.raises(anthropic.InternalServerError):
        asyncio.run(call())
    assert llm_server.stats()["status_counts"] == {"500": 2}


def test_a_retry_after_a_connection_error_is_not_sent_and_warns_once() -> None:
    with socket.socket() as unused:  # a port that nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    key = new_key()
    http = bridge.http_client(retry=bridge.Retry(attempts=2, **QUICK))
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=key, http_client=http
    )

    async def call() -> None:
        await client.chat.completions.create(model="m", messages=MESSAGES)

    async def twice() -> list[BaseException]:
        return await asyncio.gather(call(), call(), return_exceptions=True)

    with pytest.warns(bridge.BridgeWarning, match=r"max_retries=0") as warned:
        errors = asyncio.run(twice())
    assert len(warned) == 1  # once per process
    assert all(isinstance(e, openai.APIConnectionError) for e in errors)
    assert all(isinstance(e.__cause__, httpx2.ConnectError) for e in errors)  # the real one
    assert stats_for(key).requests == 4  # two calls, two attempts each; no SDK retry sent


def test_a_retry_that_ignores_the_header_gets_the_same_answer(llm_server: SimulatedServer) -> None:
    """An SDK that retried a 500 anyway would be answered from memory, not the network."""
    http = bridge.http_client(retry=bridge.Retry(attempts=2, **QUICK))
    url = llm_server.base_url + "/chat/completions"
    body = {"model": "m", "messages": MESSAGES}
    headers = {"authorization": f"Bearer {new_key()}"}

    async def first_and_retry() -> tuple[httpx2.Response, httpx2.Response]:
        first = await http.post(url, json=body, headers={**headers, "x-stainless-retry-count": "0"})
        again = await http.post(url, json=body, headers={**headers, "x-stainless-retry-count": "1"})
        return first, again

    with pytest.warns(bridge.BridgeWarning):
        first, again = asyncio.run(first_and_retry())
    assert first.headers["x-should-retry"] == "false"
    assert (again.status_code, again.json()) == (500, first.json())
    assert llm_server.stats()["requests"] == 2  # the bridge's two attempts; nothing more


def test_requests_no_sdk_marked_are_left_alone(llm_server: SimulatedServer) -> None:
    http = bridge.http_client(retry=bridge.Retry(attempts=2, **QUICK))

    async def post() -> httpx2.Response:
        return await http.post(
            llm_server.base_url + "/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            headers={"authorization": f"Bearer {new_key()}"},
        )

    response = asyncio.run(post())
    assert response.status_code == 500
    assert "x-should-retry" not in response.headers
    assert llm_server.stats()["requests"] == 2
