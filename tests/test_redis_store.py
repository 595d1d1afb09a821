"""Limits(store="redis://..."): RPM/TPM shared by processes through one Lua script.

These run against a real Redis (the ``redis_url`` fixture): under CI a missing Redis fails
them, elsewhere they skip, saying why. Every test uses its own key prefix and deletes it.
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator

import pytest

import bridge
from bridge._admission._redis import RedisStore
from bridge.testing import SimulatedServer

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
    waits = [store.reserve_sync(endpoint, (60.0, None), 0) for store in (one, two) * 6]
    capacity = sum(1 for wait in waits if wait == 0.0)
    assert 1 <= capacity <= 2  # one bucket for both controllers, not one each
    later = waits[capacity:]
    assert all(0.0 < a < b for a, b in itertools.pairwise(later))


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.llm_server(rpm=1200, latency=0.2, jitter=0.05)
def test_four_processes_share_one_limit(store_url: str, llm_server: SimulatedServer) -> None:
    key = f"sk-shared-{uuid.uuid4().hex}"
    code = textwrap.dedent(
        """
        import sys, bridge
        from bridge.testing import expected_digest
        base_url, key, store, worker = sys.argv[1:5]
        client = bridge.openai(
            base_url=base_url, api_key=key,
            limits=bridge.Limits(rpm=1200, max_in_flight=50, store=store, on_store_error="fail"),
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
            [sys.executable, "-c", code, llm_server.base_url, key, store_url, str(n)],
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
    assert stats["status_counts"].get("429", 0) <= 6  # at most 2%: the limit held together


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
