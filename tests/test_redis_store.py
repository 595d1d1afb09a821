"""Limits(store="redis://..."): RPM/TPM shared by processes through one Lua script.

These run against a real Redis (the ``redis_url`` fixture): under CI a missing Redis fails
them, elsewhere they skip, saying why. Every test uses its own key prefix and deletes it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest

import bridge
from bridge._admission._redis import RedisStore, StepRequest
from bridge.testing import SimulatedServer

#: Processes share one limit and 429s are counted: never beside another module that does
#: (xdist).
pytestmark = pytest.mark.xdist_group("rate-limits")

redis = pytest.importorskip("redis")
pytest.importorskip("openai")

UNREACHABLE = "redis://127.0.0.1:1/0"


@pytest.fixture
def store_url(redis_url: str) -> Iterator[str]:
    """``redis_url`` with a fresh key prefix, whose keys are deleted afterwards."""
    prefix = f"bridge-test-{uuid.uuid4().hex}:"
    yield f"{redis_url}?key_prefix={prefix}"
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.redis
def test_lua_bucket_is_shared_and_paced(store_url: str) -> None:
    # 1/s with a bucket of 1 s: the 12 round trips to Redis take far less than the second
    # it would need to refill one token, however busy the machine.
    endpoint = f"http://h:1/v1|{uuid.uuid4().hex}"
    one, two = RedisStore(store_url), RedisStore(store_url)  # two "processes"
    request = StepRequest(
        epoch=None,
        lane="interactive",
        share=0.3,
        bucket_seconds=1.0,
        lane_idle=1.0,
        rates=(1.0, 0.0),  # 1 a second, no token limit
        costs=(1, 0),
    )
    replies = [store.step_sync(endpoint, request) for store in (one, two) * 6]
    waits = [reply.wait for reply in replies if reply is not None]
    assert len(waits) == 12
    capacity = sum(1 for wait in waits if wait == 0.0)
    assert 1 <= capacity <= 2  # one bucket for both controllers, not one each
    later = waits[capacity:]
    assert all(0.0 < a < b for a, b in itertools.pairwise(later))


def _request(epoch: int | None = None, rates: tuple[float, float] = (-1.0, 0.0)) -> StepRequest:
    return StepRequest(
        epoch=epoch,
        lane="interactive",
        share=0.3,
        bucket_seconds=0.5,
        lane_idle=1.0,
        rates=rates,
        costs=(1, 0),
    )


def _tell_now(store: RedisStore, endpoint: str, *args: object) -> None:
    store._tell_sync(endpoint, args)  # what tell() does off a loop, at once


@pytest.mark.redis
def test_a_pause_told_by_one_process_holds_every_process(store_url: str) -> None:
    endpoint = f"e|{uuid.uuid4().hex}"
    one, two = RedisStore(store_url), RedisStore(store_url)
    first = two.step_sync(endpoint, _request(rates=(100.0, 0.0)))
    assert first is not None
    assert first.wait == 0.0
    _tell_now(one, endpoint, "pause", 5.0, 100.0, 0.0)  # one process got a 429
    again = two.step_sync(endpoint, _request(first.epoch, rates=(100.0, 0.0)))
    assert again is not None
    assert again.epoch != first.epoch  # the other's reservation is void ...
    assert again.wait >= 4.5  # ... and its new one waits for the pause


@pytest.mark.redis
def test_a_limit_learned_by_one_process_paces_the_others(store_url: str) -> None:
    endpoint = f"e|{uuid.uuid4().hex}"
    one, two = RedisStore(store_url), RedisStore(store_url)
    _tell_now(one, endpoint, "learn", "r", 2.0, 1.0, 0.0, 5.0, 0)  # 120 a minute, told
    waits = []
    for _ in range(4):
        reply = two.step_sync(endpoint, _request())  # nothing configured: learned
        assert reply is not None
        assert reply.rates[0] == pytest.approx(2.0)
        waits.append(reply.wait)
    assert waits[-1] > waits[-2] > 0  # paced at the shared rate


def _lane_request(lane: str, epoch: int | None = None) -> StepRequest:
    return StepRequest(
        epoch=epoch,
        lane=lane,
        share=0.3,
        bucket_seconds=0.5,
        lane_idle=5.0,
        rates=(10.0, 0.0),  # configured: 10 a second, no token limit
        costs=(1, 0),
    )


@pytest.mark.parametrize("reserved_in", ["the epoch before the void", "the current epoch"])
@pytest.mark.redis
def test_an_answer_resyncs_only_from_a_reservation_that_still_stands(
    store_url: str, reserved_in: str
) -> None:
    """Interactive traffic voids the batch queue's reservations (they are made again at
    the batch share). An answer to a request reserved before that must not lower the
    batch bucket by the charges since its mark: they include the voided reservations,
    which are being made again, so the queue would be counted twice and stall."""
    endpoint = f"e|{uuid.uuid4().hex}"
    store = RedisStore(store_url)
    first = store.step_sync(endpoint, _lane_request("batch"))
    assert first is not None
    for _ in range(20):  # a batch queue two seconds deep
        store.step_sync(endpoint, _lane_request("batch"))
    woke = store.step_sync(endpoint, _lane_request("interactive"))
    assert woke is not None
    assert woke.epoch != first.epoch  # interactive demand voided the batch reservations
    epoch = first.epoch if reserved_in == "the epoch before the void" else woke.epoch
    # The server says 0 left; the cluster charged 20 since the first request's mark.
    _tell_now(store, endpoint, "learn", "r", -1.0, 0.0, first.totals[0], 5.0, epoch)
    after = store.step_sync(endpoint, _lane_request("batch"))
    assert after is not None
    if reserved_in == "the epoch before the void":
        assert after.wait < 0.5  # from the voided level: the queue is not counted again
    else:
        assert after.wait > 2.0  # 20 charged since the mark, at 7 a second


@pytest.mark.redis
def test_the_shared_opening_grows_when_the_server_never_says_its_limits(store_url: str) -> None:
    """A server that sends no rate-limit headers and never a 429 (a self-hosted model)
    must not hold the cluster to the opening window's 24 a second for good."""
    endpoint = f"e|{uuid.uuid4().hex}"
    store = RedisStore(store_url)
    opening = dataclasses.replace(_request(), opening=24)
    first = [store.step_sync(endpoint, opening) for _ in range(48)]
    assert all(reply is not None for reply in first)
    assert max(reply.wait for reply in first if reply is not None) > 0.5  # 24, then paced
    time.sleep(3.0)  # the opening rate doubles each second: 192 a second by now
    later = [store.step_sync(endpoint, opening) for _ in range(100)]
    waits = [reply.wait for reply in later if reply is not None]
    assert len(waits) == 100
    assert max(waits) < 1.0  # at a fixed 24 a second the last would wait about 4 s


@pytest.mark.redis
def test_after_a_pause_reservations_are_made_again_not_counted_twice(store_url: str) -> None:
    endpoint = f"e|{uuid.uuid4().hex}"
    store = RedisStore(store_url)
    replies = [store.step_sync(endpoint, _request(rates=(10.0, 0.0))) for _ in range(30)]
    assert replies[-1] is not None
    assert replies[-1].wait > 2  # 30 reserved at 10 a second: a queue of about 3 s
    _tell_now(store, endpoint, "pause", 1.0, 10.0, 0.0)
    redone = [store.step_sync(endpoint, _request(r.epoch, rates=(10.0, 0.0))) for r in replies]  # type: ignore[union-attr]
    last = max(r.wait for r in redone if r is not None)
    # The 30 wait for the pause and then about 3 s, not 3 s plus the 3 s they held before.
    assert last < 1.0 + 3.0 + 1.0


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("headers", [True, False], ids=["headers", "no-headers"])
def test_four_processes_share_one_limit(
    store_url: str, headers: bool, request: pytest.FixtureRequest
) -> None:
    from bridge.testing import serve

    with serve(rpm=1200, latency=0.2, jitter=0.05, rate_limit_headers=headers) as server:
        _four_processes(store_url, server, configured=headers)


def _four_processes(store_url: str, llm_server: SimulatedServer, *, configured: bool) -> None:
    key = f"sk-shared-{uuid.uuid4().hex}"
    code = textwrap.dedent(
        """
        import sys, bridge
        from bridge.testing import expected_digest
        base_url, key, store, worker, configured = sys.argv[1:6]
        rates = {"rpm": 1200} if configured == "1" else {}  # else learned, or found from 429s
        client = bridge.openai(
            base_url=base_url, api_key=key,
            limits=bridge.Limits(max_in_flight=50, store=store, on_store_error="fail", **rates),
        )
        async def call(i):
            text = f"worker {worker} question {i}"
            r = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": text}])
            return r.choices[0].message.content.startswith("digest=" + expected_digest(text))
        results = bridge.map(call, range(75), concurrency=50, return_exceptions=True)
        print(sum(r is not True for r in results))
        """
    )
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                llm_server.base_url,
                key,
                store_url,
                str(n),
                "1" if configured else "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    outputs = [w.communicate(timeout=100) for w in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert out.strip() == "0"  # no failed call in any process
    stats = llm_server.stats()
    assert stats["requests"] == 300
    limited = stats["status_counts"].get("429", 0)
    if configured:
        assert limited <= 6  # at most 2%: the limit held together
    else:  # found from 429s alone, by the four together
        assert limited <= 0.05 * (300 + limited)


def test_unreachable_store_falls_back_with_a_warning(
    b: bridge.Bridge, llm_server: SimulatedServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = bridge.openai(
        base_url=llm_server.base_url,
        api_key=f"sk-{uuid.uuid4().hex}",
        limits=bridge.Limits(rpm=6000, store=UNREACHABLE, on_store_error="local"),
    )

    async def call(i: int) -> str:
        reply = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": str(i)}]
        )
        return reply.choices[0].message.content or ""

    caplog.set_level(logging.WARNING, logger="bridge")
    assert len(b.map(call, range(5), concurrency=5)) == 5
    b.run(client.close())
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # said clearly, once, not per request
    assert "own limits" in warnings[0].getMessage()


def test_unreachable_store_fails_when_asked(b: bridge.Bridge, llm_server: SimulatedServer) -> None:
    client = bridge.openai(
        base_url=llm_server.base_url,
        api_key=f"sk-{uuid.uuid4().hex}",
        limits=bridge.Limits(rpm=6000, store=UNREACHABLE, on_store_error="fail"),
    )

    async def call() -> object:
        return await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )

    with pytest.raises(bridge.RateLimitStoreError, match="on_store_error='local'"):
        b.run(call())
    b.run(client.close())
    assert llm_server.stats()["requests"] == 0
