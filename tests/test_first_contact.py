"""Admission control on first contact, against servers unlike the providers' own.

Each test plays one situation a new user meets (a cold process, a gateway that sends no
rate-limit headers, a provider that charges tokens up front, broken headers, a client made
per call, a password in the base URL, a refused connection) against the simulated server
in the matching mode, with nothing configured unless the test says so. They assert counts
from the server's /_stats and from the results, never wall time; the timings are in
``python -m bridge.bench.limits`` and docs/limits.md.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from typing import Any

import pytest

import bridge
from bridge._admission._controller import OPENING_WINDOW, _registry
from bridge.testing import SimulatedServer, expected_digest, serve

openai = pytest.importorskip("openai")

#: Counts 429s and paces against limits: never beside another module that does (xdist).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("rate-limits")]


def new_key() -> str:
    return f"sk-first-{uuid.uuid4().hex}"


def caller(client: Any, **options: Any) -> Any:
    async def call(i: int) -> bool:
        text = f"first contact {i}"
        reply = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": text}], **options
        )
        return bool(reply.choices[0].message.content.startswith("digest=" + expected_digest(text)))

    return call


def statuses(server: SimulatedServer) -> dict[str, int]:
    return dict(server.stats()["status_counts"])


def endpoint_stats(key_prefix: str) -> bridge.EndpointStats:
    import hashlib

    digest = hashlib.sha256(key_prefix.encode()).hexdigest()[:12]
    (found,) = [s for s in bridge.stats().values() if s.endpoint.endswith(digest)]
    return found


# -- 1. no serialised probe --------------------------------------------------------------------

_COLD = """
import sys, bridge
client = bridge.openai(base_url=sys.argv[1], api_key="sk-cold")
async def call(i):
    messages = [{"role": "user", "content": str(i)}]
    r = await client.chat.completions.create(model="m", messages=messages)
    return r.choices[0].message.content.startswith("digest=")
print(sum(bridge.map(call, range(20), concurrency=20)))
"""


@pytest.mark.parametrize("headers", [True, False], ids=["headers", "no-headers"])
def test_a_cold_process_overlaps_its_first_calls(headers: bool) -> None:
    """Nothing configured, a fresh interpreter: all 20 calls are in flight at once."""
    with serve(latency=0.3, rpm=60_000, tpm=10_000_000, rate_limit_headers=headers) as server:
        done = subprocess.run(
            [sys.executable, "-c", _COLD, server.base_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "20"
        stats = server.stats()
    assert stats["max_in_flight"] == 20  # no request went first, alone
    assert stats["rate_limited"] == 0


@pytest.mark.llm_server(rpm=120, latency=0.05)
def test_a_tiny_limit_costs_one_burst_of_429s_and_no_call(
    b: bridge.Bridge, llm_server: SimulatedServer
) -> None:
    # rpm 120 lets 2 through at once; the opening window sends 10 before anything is known.
    client = bridge.openai(base_url=llm_server.base_url, api_key=new_key())
    assert b.map(caller(client), range(10), concurrency=10) == [True] * 10
    assert statuses(llm_server)["429"] <= 10 - 2  # the opening burst only: learned after it


# -- 2. rate discovery from 429s alone ---------------------------------------------------------


@pytest.mark.llm_server(rpm=1200, latency=0.5, jitter=0.1, rate_limit_headers=False)
def test_a_server_without_headers_is_not_stormed(
    b: bridge.Bridge, llm_server: SimulatedServer
) -> None:
    """429 + retry-after only: the rate is found and held; nothing fails."""
    key = new_key()
    client = bridge.openai(base_url=llm_server.base_url, api_key=key)
    results = b.map(caller(client), range(300), concurrency=50, return_exceptions=True)
    assert results == [True] * 300
    counts = statuses(llm_server)
    attempts = counts["200"] + counts.get("429", 0)
    assert counts.get("429", 0) <= 0.05 * attempts
    assert endpoint_stats(key).rpm is not None  # a rate was found and is in force


# -- 3. token accounting as the provider counts -------------------------------------------------


@pytest.mark.parametrize("accounting", ["sum", "max", "usage"])
def test_tokens_charged_up_front_cost_no_429s_once_learned(accounting: str) -> None:
    """Each provider's accounting, end to end: the server charges the sum (Azure), the
    maximum (OpenAI) or the usage, and the bridge is told the same. A 300-character prompt
    (about 75 tokens) with max_tokens 200 makes them differ: 275, 200, or ~100 settled."""
    with serve(tpm=200_000, latency=0.05, token_accounting=accounting) as server:
        client = bridge.openai(
            base_url=server.base_url,
            api_key=new_key(),
            limits=bridge.Limits(token_accounting=accounting),  # type: ignore[arg-type]
        )
        padded = caller(client, max_tokens=200)

        async def call(i: int) -> bool:
            return bool(await padded(f"{i} " + "x" * 300))

        cold = bridge.map(call, range(40), concurrency=30, return_exceptions=True)
        assert cold == [True] * 40
        assert statuses(server).get("429", 0) <= OPENING_WINDOW  # the opening burst at most
        server.reset()
        warm = bridge.map(call, range(40, 100), concurrency=30, return_exceptions=True)
        assert warm == [True] * 60
        assert statuses(server).get("429", 0) <= 0.03 * 60


def test_the_servers_remaining_corrects_an_accounting_that_charges_too_little() -> None:
    """Told "max" (OpenAI's way), facing a server that charges the sum: 2x under-charged.

    The x-ratelimit-remaining-tokens of every response pulls the local bucket down to the
    server's view, so the mismatch converges instead of turning into a storm of 429s.
    """
    prompt = "x" * 400  # about 100 prompt tokens, and max_tokens 100
    with serve(tpm=120_000, latency=0.05, token_accounting="sum") as server:
        client = bridge.openai(
            base_url=server.base_url,
            api_key=new_key(),
            limits=bridge.Limits(token_accounting="max"),
        )

        async def call(i: int) -> bool:
            reply = await client.chat.completions.create(
                model="m", max_tokens=100, messages=[{"role": "user", "content": f"{i}{prompt}"}]
            )
            return bool(reply.choices)

        bridge.map(call, range(10), concurrency=10)  # learn the limit
        server.reset()
        assert bridge.map(call, range(100), concurrency=30) == [True] * 100
        counts = statuses(server)
    assert counts.get("429", 0) <= 0.05 * (100 + counts.get("429", 0))


def test_anthropic_input_and_output_limits_are_learned_and_settled() -> None:
    anthropic = pytest.importorskip("anthropic")
    del anthropic
    with serve(itpm=60_000, otpm=30_000, latency=0.05) as server:
        key = new_key()
        client = bridge.anthropic(base_url=server.root_url, api_key=key)

        async def call(i: int) -> bool:
            text = f"anthropic {i}"
            reply = await client.messages.create(
                model="m", max_tokens=100, messages=[{"role": "user", "content": text}]
            )
            return bool(reply.content[0].text.startswith("digest=" + expected_digest(text)))

        assert bridge.map(call, range(30), concurrency=30) == [True] * 30
        server.reset()
        assert bridge.map(call, range(30, 90), concurrency=30) == [True] * 60
        counts = statuses(server)
        label = endpoint_stats(key).endpoint
        (controller,) = [c for c in _registry.values() if c.endpoint.label == label]
    assert counts.get("429", 0) <= 0.03 * 60  # learned and settled: paced, not refused
    assert sorted(controller._buckets) == ["input_tokens", "output_tokens"]
    assert controller.accounting == "usage"


# -- 4. headers are untrusted input ------------------------------------------------------------

# Each bad value has a test of its own against the controller (test_admission.py); here,
# end to end, they come in two bundles, on every response and on a third of them.
BROKEN = {
    "zero-limits": {
        "x-ratelimit-limit-requests": "0",
        "x-ratelimit-remaining-requests": "-50",
        "x-ratelimit-limit-tokens": "nan",
        "x-ratelimit-remaining-tokens": "nan",
        "x-ratelimit-reset-requests": "soon",
        "retry-after": "86400",
        "retry-after-ms": "86400000",
    },
    "tiny-limits": {
        "x-ratelimit-limit-requests": "1e-9",
        "x-ratelimit-limit-tokens": "1",
        "x-ratelimit-reset-tokens": "-1s",
        "retry-after": "-5",
        "retry-after-ms": "-5000",
    },
}


@pytest.mark.parametrize(
    ("overrides", "rate"),
    [
        *[
            pytest.param(o, r, id=f"{name}-{label}")
            for name, o in BROKEN.items()
            for r, label in ((1.0, "every-response"), (0.3, "some-responses"))
        ],
        # Believable, but wrong on one response in ten: not believed, or soon corrected.
        pytest.param({"x-ratelimit-limit-requests": "1"}, 0.1, id="one-rpm-some-responses"),
    ],
)
def test_broken_headers_never_break_the_endpoint(overrides: dict[str, str], rate: float) -> None:
    with serve(
        rpm=600, tpm=600_000, latency=0.02, header_overrides=overrides, header_override_rate=rate
    ) as server:
        key = new_key()
        client = bridge.openai(
            base_url=server.base_url,
            api_key=key,
            retry=bridge.Retry(attempts=8, backoff=0.05, max_wait=0.5),
        )
        assert bridge.map(caller(client), range(20), concurrency=10) == [True] * 20
        # A new client on the same endpoint works too: nothing broke for good.
        again = bridge.openai(base_url=server.base_url, api_key=key)
        assert bridge.map(caller(again), range(20, 25)) == [True] * 5
    stats = endpoint_stats(key)
    assert stats.rpm is None or 1 <= stats.rpm <= 1e8


# -- 5. clients close themselves ---------------------------------------------------------------

_DROPPED = """
import gc, os, sys, warnings, bridge
warnings.simplefilter("always")
url, transport = sys.argv[1], sys.argv[2]

def fds():
    return len(os.listdir("/proc/self/fd"))

async def call(client, i):
    messages = [{"role": "user", "content": str(i)}]
    r = await client.chat.completions.create(model="m", messages=messages)
    return r.choices[0].message.content.startswith("digest=")

def one(i):  # a client per call, as a view might make one per request, then dropped
    client = bridge.openai(base_url=url, api_key="sk-dropped", transport=transport)
    return bridge.run(call(client, i))

assert all(one(i) for i in range(20))
gc.collect()
before = fds()
assert all(one(i) for i in range(20, 220))
gc.collect()
print(fds() - before)
"""


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_client_per_call_leaves_nothing_open(llm_server: SimulatedServer, transport: str) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _DROPPED, llm_server.base_url, transport],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) <= 2  # file descriptors flat over 200 dropped clients
    assert "Unclosed" not in done.stderr
    assert "ResourceWarning" not in done.stderr
    assert llm_server.stats()["requests"] == 220


# -- 6. no secret in endpoint names ------------------------------------------------------------


@pytest.mark.llm_server(error_rates={500: 0.5}, seed=5)
def test_a_password_in_the_base_url_appears_nowhere(
    llm_server: SimulatedServer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    caplog.set_level(logging.DEBUG, logger="bridge")
    prefix = f"bridge-test-{uuid.uuid4().hex}:"
    url = llm_server.base_url.replace("http://", "http://alice:PASSWORD123@")
    client = bridge.openai(
        base_url=url,
        default_query={"key": "QUERYSECRET"},
        api_key="sk-password-test",
        transport="httpx",
        limits=bridge.Limits(rpm=6000, store=f"{redis_url}?key_prefix={prefix}"),
        retry=bridge.Retry(attempts=8, backoff=0.01),
    )
    assert bridge.map(caller(client), range(20)) == [True] * 20
    shown = [
        repr(bridge.stats()),
        *[r.getMessage() for r in caplog.records],
        repr(client._client._transport),
        *[k.decode() for k in redis.Redis.from_url(redis_url).keys(f"{prefix}*")],
    ]
    assert any("retry" in text for text in shown)  # the retry log line was looked at
    assert any(text.startswith(prefix) for text in shown)  # and the Redis keys
    for text in shown:
        assert "PASSWORD123" not in text
        assert "QUERYSECRET" not in text
        assert "alice" not in text


# -- 7. honest errors --------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_refused_connection_is_a_connection_error_not_a_timeout(transport: str) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = bridge.openai(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key=new_key(),
        transport=transport,  # type: ignore[arg-type]
        retry=bridge.Retry(attempts=2, backoff=0.01),
    )
    with pytest.raises(openai.APIConnectionError) as caught:
        bridge.run(caller(client)(0))
    assert not isinstance(caught.value, openai.APITimeoutError)
    cause = repr(caught.value.__cause__).lower()
    assert "refused" in cause  # the cause is named, not guessed at


def test_keys_in_the_query_are_endpoints_of_their_own(llm_server: SimulatedServer) -> None:
    tag = uuid.uuid4().hex
    for name in ("a", "b", "c"):
        client = bridge.openai(
            base_url=llm_server.base_url, api_key="sk-shared", default_query={"key": f"{tag}{name}"}
        )
        assert bridge.run(caller(client)(0))
    labels = [s.endpoint for s in bridge.stats().values() if s.requests and tag not in s.endpoint]
    ours = [s for s in bridge.stats().values() if s.endpoint in labels and s.requests == 1]
    assert len(ours) >= 3  # three keys, three endpoints, one request each
    assert all(tag not in label for label in labels)


def test_a_password_in_the_base_url_gets_a_clear_error_with_aiohttp(
    llm_server: SimulatedServer,
) -> None:
    client = bridge.openai(
        base_url=llm_server.base_url.replace("http://", "http://alice:pw@"), api_key=new_key()
    )
    with pytest.raises(ValueError, match="take them out of base_url"):
        bridge.run(caller(client)(0))
    assert llm_server.stats()["requests"] == 0
