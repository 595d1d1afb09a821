"""Bridge clients on loops that are not a bridge's: asyncio.run, a thread's own loop.

A request from such a loop hops to the default bridge's loop, is admitted and sent there,
and its response, each chunk of a stream, and its cancellation come back. Real HTTP to the
simulated server with the official SDK; counts from /_stats and bridge.stats(), never time.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import bridge
from bridge.testing import SimulatedServer, expected_digest

openai = pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")

pytestmark = pytest.mark.slow


def new_key() -> str:
    return f"sk-hop-{uuid.uuid4().hex}"


def stats_for(key: str) -> bridge.EndpointStats:
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    matches = [s for s in bridge.stats().values() if s.endpoint.endswith(digest)]
    assert len(matches) == 1
    return matches[0]


def ask(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question number {i}"}]


def answered(i: int, content: str | None) -> bool:
    return (content or "").startswith("digest=" + expected_digest(f"question number {i}"))


async def chat(client: Any, i: int) -> bool:
    reply = await client.chat.completions.create(model="m", messages=ask(i))
    return answered(i, reply.choices[0].message.content)


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for clean-up that happens on the bridge's loop or in the server (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


@pytest.fixture
def own_default() -> Iterator[bridge.Bridge]:
    """A default bridge of the test's own, which it may close; the old one comes back."""
    mine = bridge.Bridge(name="hop-default")
    previous = bridge.set_default(mine) or bridge.Bridge()  # None: no default was made yet
    try:
        yield mine
    finally:
        mine.close()
        bridge.set_default(previous)


# -- the default path: asyncio.run over a client made once -------------------------------------


@pytest.mark.llm_server
def test_asyncio_run_twice_over_one_client(llm_server: SimulatedServer) -> None:
    key = new_key()
    client = bridge.openai(base_url=llm_server.base_url, api_key=key)

    async def round_of(n: int) -> list[bool]:
        return list(await asyncio.gather(*(chat(client, i) for i in range(n))))

    assert asyncio.run(round_of(10)) == [True] * 10
    assert asyncio.run(round_of(10)) == [True] * 10  # a new loop: no "Event loop is closed"
    stats = stats_for(key)
    assert stats.requests == 20 == llm_server.stats()["requests"]
    assert stats.in_flight == 0


@pytest.mark.llm_server(latency=0.2)
def test_hopped_requests_are_admitted_under_the_same_limits(llm_server: SimulatedServer) -> None:
    """Sync callers and a foreign loop share one endpoint's concurrency cap."""
    key = new_key()
    client = bridge.openai(
        base_url=llm_server.base_url, api_key=key, limits=bridge.Limits(max_in_flight=4)
    )
    from_loop: list[bool] = []

    def thread_with_its_own_loop() -> None:
        async def main() -> list[bool]:
            return list(await asyncio.gather(*(chat(client, i) for i in range(12))))

        from_loop.extend(asyncio.run(main()))

    thread = threading.Thread(target=thread_with_its_own_loop)
    thread.start()
    from_sync = bridge.map(lambda i: chat(client, i), range(12, 24), concurrency=12)
    thread.join()
    assert from_loop == [True] * 12
    assert from_sync == [True] * 12
    server = llm_server.stats()
    assert server["requests"] == stats_for(key).requests == 24
    assert 1 < server["max_in_flight"] <= 4


@pytest.mark.llm_server(chunk_delay=0.01)
def test_stream_from_a_foreign_loop(llm_server: SimulatedServer) -> None:
    key = new_key()
    client = bridge.openai(base_url=llm_server.base_url, api_key=key)

    async def main() -> str:
        stream = await client.chat.completions.create(
            model="m", messages=ask(1), stream=True, stream_options={"include_usage": True}
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return "".join(parts)

    assert answered(1, asyncio.run(main()))
    stats = stats_for(key)
    assert stats.in_flight == 0
    assert stats.tokens_out == llm_server.stats()["tokens_out"] > 0


@pytest.mark.llm_server
def test_streamed_request_body_is_read_on_the_callers_loop(llm_server: SimulatedServer) -> None:
    """A body from an async generator belongs to the caller's loop: it is read there."""
    key = new_key()
    http = bridge.http_client()
    body = b'{"model": "m", "messages": [{"role": "user", "content": "question number 3"}]}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16):
            await asyncio.sleep(0)
            yield body[start : start + 16]

    async def main() -> Any:
        response = await http.post(
            llm_server.base_url + "/chat/completions",
            content=chunks(),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )
        return response.json()

    reply = asyncio.run(main())
    assert answered(3, reply["choices"][0]["message"]["content"])
    assert stats_for(key).requests == 1


# -- cancellation, and callers that go away -----------------------------------------------------


@pytest.mark.llm_server(latency=30)
def test_cancelled_caller_cancels_the_request_and_frees_its_slot(
    llm_server: SimulatedServer,
) -> None:
    key = new_key()
    client = bridge.openai(base_url=llm_server.base_url, api_key=key)

    async def main() -> None:
        task = asyncio.ensure_future(chat(client, 1))
        # The server's counter is in another process: nothing to wait on but itself.
        while llm_server.stats()["in_flight"] == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The hop waited for the bridge's side to unwind: the slot is free already.
        assert stats_for(key).in_flight == 0

    asyncio.run(main())
    until(lambda: llm_server.stats()["in_flight"] == 0)  # the server saw the hang-up


@pytest.mark.llm_server(chunk_delay=0.05)
def test_cancelled_mid_stream_frees_the_slot(llm_server: SimulatedServer) -> None:
    key = new_key()
    client = bridge.openai(base_url=llm_server.base_url, api_key=key)
    started = asyncio.Event

    async def main() -> int:
        seen = 0
        first = started()

        async def read() -> None:
            nonlocal seen
            stream = await client.chat.completions.create(model="m", messages=ask(2), stream=True)
            async for _ in stream:
                seen += 1
                first.set()

        task = asyncio.ensure_future(read())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen

    assert asyncio.run(main()) >= 1
    until(lambda: stats_for(key).in_flight == 0)
    assert llm_server.stats()["requests"] == 1


@pytest.mark.llm_server(chunk_delay=0.05)
@pytest.mark.parametrize("chunks_read", [0, 1])
def test_stream_left_open_when_its_loop_closes_is_closed(
    llm_server: SimulatedServer, chunks_read: int
) -> None:
    """asyncio.run returns a stream read in part or not at all, and its loop closes."""
    key = new_key()
    client = bridge.openai(base_url=llm_server.base_url, api_key=key)

    async def main() -> Any:
        stream = await client.chat.completions.create(model="m", messages=ask(3), stream=True)
        for _ in range(chunks_read):
            await stream.__anext__()
        return stream

    stream = asyncio.run(main())
    if chunks_read == 0:  # never iterated: only collecting it can close it
        assert stats_for(key).in_flight == 1
    del stream
    gc.collect()
    until(lambda: stats_for(key).in_flight == 0)
    assert stats_for(key).requests == 1


# -- where a hop cannot work ---------------------------------------------------------------------


@pytest.mark.llm_server
def test_closed_default_bridge_says_why(
    own_default: bridge.Bridge, llm_server: SimulatedServer
) -> None:
    client = bridge.openai(base_url=llm_server.base_url, api_key=new_key())
    assert asyncio.run(chat(client, 1))  # hops to own_default
    own_default.close()
    with pytest.raises(bridge.ForeignLoopError, match=r"bridge is closed.*set_default"):
        asyncio.run(chat(client, 2))
    assert llm_server.stats()["requests"] == 1


@pytest.mark.llm_server(latency=30)
def test_bridge_closing_under_a_waiting_hop_fails_it(
    own_default: bridge.Bridge, llm_server: SimulatedServer
) -> None:
    client = bridge.openai(base_url=llm_server.base_url, api_key=new_key())
    outcome: list[BaseException] = []

    def caller() -> None:
        try:
            asyncio.run(chat(client, 1))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    until(lambda: llm_server.stats()["in_flight"] == 1)
    own_default.close()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], bridge.ForeignLoopError)  # the SDK passes it through


@pytest.mark.llm_server
def test_own_transport_stays_on_the_callers_loop(llm_server: SimulatedServer) -> None:
    key = new_key()
    client = bridge.openai(
        base_url=llm_server.base_url, api_key=key, transport=httpx2.AsyncHTTPTransport()
    )

    async def main() -> bool:
        async with client:
            return await chat(client, 1)

    assert asyncio.run(main())
    assert stats_for(key).requests == 1  # admitted all the same


@pytest.mark.llm_server
def test_on_the_bridge_loop_there_is_no_hop(
    b: bridge.Bridge, llm_server: SimulatedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridge._admission._hop
    import bridge._admission._transport

    hops: list[object] = []
    real = bridge._admission._hop.call_on

    async def counted(*args: Any, **kwargs: Any) -> Any:
        hops.append(args[1])
        return await real(*args, **kwargs)

    monkeypatch.setattr(bridge._admission._hop, "call_on", counted)
    monkeypatch.setattr(bridge._admission._transport, "call_on", counted)
    client = bridge.openai(base_url=llm_server.base_url, api_key=new_key())

    async def streamed() -> str:
        stream = await client.chat.completions.create(model="m", messages=ask(1), stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert answered(1, b.run(streamed()))
    assert hops == []  # on a bridge's loop: sent there, nothing hops
    assert answered(1, asyncio.run(streamed()))
    assert len(hops) >= 3  # the request, the body's chunk(s), its end


@pytest.mark.llm_server(latency=30)
def test_a_deadline_set_on_the_callers_loop_holds_on_the_bridges(
    llm_server: SimulatedServer,
) -> None:
    """The caller's context travels with the hop: bridge.deadline() cuts the request."""
    key = new_key()
    client = bridge.openai(base_url=llm_server.base_url, api_key=key)

    async def main() -> None:
        with bridge.deadline(0.5):
            await chat(client, 1)

    with pytest.raises(openai.APITimeoutError):  # not the 30 s the server takes
        asyncio.run(main())
    assert stats_for(key).requests == 1  # and no retry past the deadline
