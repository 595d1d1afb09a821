"""Rate limits: token buckets per API key, 429s with the real wait, provider headers."""

from __future__ import annotations

import asyncio
import math
import re
import time
from datetime import datetime, timezone

import anthropic
import httpx
import openai
import pytest

from bridge.testing import SimulatedServer, serve
from bridge.testing._ratelimit import Cost, RateLimiter, TokenBucket, format_duration

USER = [{"role": "user", "content": "hi"}]
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s)$|^\d+ms$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestBuckets:
    def test_burst_is_one_second_of_quota_then_the_wait_is_exact(self) -> None:
        clock = FakeClock()
        limiter = RateLimiter(rpm=600, tpm=None, burst_seconds=1.0, clock=clock)
        admitted = [limiter.admit("k", 1).admitted for _ in range(11)]
        assert admitted == [True] * 10 + [False]
        refused = limiter.admit("k", 1)
        assert refused.limited_by == "requests"
        assert refused.wait == pytest.approx(0.1)
        clock.now += refused.wait * 0.99
        assert not limiter.admit("k", 1).admitted
        clock.now += refused.wait * 0.02
        assert limiter.admit("k", 1).admitted

    def test_keys_have_their_own_buckets(self) -> None:
        limiter = RateLimiter(rpm=60, tpm=None, burst_seconds=1.0, clock=FakeClock())
        assert limiter.admit("a", 1).admitted
        assert not limiter.admit("a", 1).admitted
        assert limiter.admit("b", 1).admitted

    def test_tokens_limit_and_oversized_requests_go_into_debt(self) -> None:
        clock = FakeClock()
        limiter = RateLimiter(rpm=None, tpm=6000, burst_seconds=1.0, clock=clock)  # 100/s
        first = limiter.admit("k", 250)  # bigger than the bucket: allowed when full
        assert first.admitted
        assert first.tokens is not None
        assert first.tokens[1] == 0  # remaining
        refused = limiter.admit("k", 10)
        assert refused.limited_by == "tokens"
        assert refused.wait == pytest.approx(1.6)  # 150 tokens of debt + 10 at 100/s

    def test_bucket_refills_continuously_up_to_capacity(self) -> None:
        bucket = TokenBucket(per_minute=120, burst_seconds=2.0, now=0.0)
        assert bucket.capacity == 4.0
        bucket.level = 0.0
        bucket.refill(0.5)
        assert bucket.level == pytest.approx(1.0)
        bucket.refill(100.0)
        assert bucket.level == 4.0
        assert bucket.time_to_full() == 0.0

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (0.0, "0ms"),
            (0.02, "20ms"),
            (0.0201, "21ms"),
            (1.0, "1s"),
            (1.5, "1.5s"),
            (59.999, "59.999s"),
            (360.0, "6m0s"),
            (361.25, "6m1.25s"),
            (3723.0, "1h2m3s"),
        ],
    )
    def test_openai_duration_format(self, seconds: float, text: str) -> None:
        assert format_duration(seconds) == text


def post(
    server: SimulatedServer, key: str, path: str = "/chat/completions", **body: object
) -> httpx.Response:
    payload = {"model": "m", "messages": USER, **body}
    with httpx.Client(trust_env=False) as client:
        return client.post(
            server.base_url + path, json=payload, headers={"Authorization": f"Bearer {key}"}
        )


def drain(server: SimulatedServer, key: str) -> httpx.Response:
    """Send until the first 429 (the bucket holds 10) and return it."""
    for _ in range(50):
        response = post(server, key)
        if response.status_code == 429:
            return response
    raise AssertionError("50 requests in a row were admitted against rpm=600")


@pytest.mark.llm_server(rpm=600)
class TestRequestsPerMinute:
    @pytest.mark.anyio
    async def test_a_burst_of_100_gets_mostly_429_with_the_real_wait(
        self, llm_server: SimulatedServer
    ) -> None:
        async with openai.AsyncOpenAI(
            base_url=llm_server.base_url, api_key="burst", max_retries=0
        ) as client:
            results = await asyncio.gather(
                *(
                    client.chat.completions.with_raw_response.create(model="m", messages=USER)
                    for _ in range(100)
                ),
                return_exceptions=True,
            )
        limited = [r for r in results if isinstance(r, openai.RateLimitError)]
        ok = [r for r in results if not isinstance(r, BaseException)]
        assert len(ok) + len(limited) == 100
        # The bucket holds 10; the burst takes a little time to send, so a few
        # more trickle in at 10 per second, but far fewer than the 429s.
        assert 10 <= len(ok) <= 40
        for error in limited:
            headers = error.response.headers
            wait_ms = int(headers["retry-after-ms"])
            # At most one request is missing from the bucket: 1 / (10 per s) = 100 ms.
            assert 0 < wait_ms <= 100
            assert headers["retry-after"] == str(math.ceil(wait_ms / 1000))
            assert headers["x-ratelimit-remaining-requests"] == "0"
            assert headers["x-ratelimit-limit-requests"] == "600"
            assert GO_DURATION.match(headers["x-ratelimit-reset-requests"])
            assert error.body is not None
            assert error.code == "rate_limit_exceeded"
        stats = llm_server.stats()
        assert stats["requests"] == len(ok)
        assert stats["rate_limited"] == len(limited)
        assert stats["status_counts"] == {"200": len(ok), "429": len(limited)}

    def test_waiting_retry_after_ms_is_enough(self, llm_server: SimulatedServer) -> None:
        refused = drain(llm_server, "retry")
        assert refused.json()["error"]["type"] == "rate_limit_error"
        # Sleeping longer than told can only refill more, so this cannot flake.
        time.sleep(int(refused.headers["retry-after-ms"]) / 1000)
        assert post(llm_server, "retry").status_code == 200

    def test_requests_paced_at_9_per_second_all_pass(self, llm_server: SimulatedServer) -> None:
        statuses = []
        with openai.OpenAI(base_url=llm_server.base_url, api_key="paced", max_retries=0) as client:
            sent = -1.0
            for _ in range(20):
                # Spaced from the previous send, so a stall never leads to a catch-up burst.
                time.sleep(max(0.0, sent + 1 / 9 - time.monotonic()))
                sent = time.monotonic()
                raw = client.chat.completions.with_raw_response.create(model="m", messages=USER)
                statuses.append(raw.http_response.status_code)
        assert statuses == [200] * 20
        assert llm_server.stats()["rate_limited"] == 0

    def test_every_response_carries_openai_headers(self, llm_server: SimulatedServer) -> None:
        first = post(llm_server, "headers")
        second = post(llm_server, "headers", path="/embeddings", input="x")
        for response in (first, second):
            assert response.headers["x-ratelimit-limit-requests"] == "600"
            assert GO_DURATION.match(response.headers["x-ratelimit-reset-requests"])
        assert first.headers["x-ratelimit-remaining-requests"] == "9"
        assert int(second.headers["x-ratelimit-remaining-requests"]) in (8, 9)
        assert "x-ratelimit-limit-tokens" not in first.headers  # no TPM configured

    def test_reset_refills_the_buckets(self, llm_server: SimulatedServer) -> None:
        drain(llm_server, "refill")
        llm_server.reset()
        assert post(llm_server, "refill").status_code == 200


# Slow refills (10 tokens/s, 1 request per 10 s) keep these exact on a busy machine.
@pytest.mark.llm_server(rpm=6, tpm=600, burst_seconds=20.0)
class TestTokensPerMinuteAndAnthropic:
    def test_tokens_are_charged_prompt_plus_max_tokens(self, llm_server: SimulatedServer) -> None:
        first = post(llm_server, "tpm", max_tokens=150)  # 1 prompt token + 150 of 200
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-tokens"] == "600"
        assert first.headers["x-ratelimit-remaining-tokens"] == "49"
        second = post(llm_server, "tpm", max_tokens=100)
        assert second.status_code == 429
        assert "tokens" in second.json()["error"]["message"]
        # 52 tokens were missing at 10 per second, less what flowed in meanwhile.
        assert 4000 < int(second.headers["retry-after-ms"]) <= 5200

    def test_anthropic_headers_and_429_shape(self, llm_server: SimulatedServer) -> None:
        before = datetime.now(timezone.utc).replace(microsecond=0)
        with anthropic.Anthropic(
            base_url=llm_server.root_url, api_key="anth", max_retries=0
        ) as client:
            raw = client.messages.with_raw_response.create(model="c", max_tokens=10, messages=USER)
            client.messages.create(model="c", max_tokens=10, messages=USER)
            with pytest.raises(anthropic.RateLimitError) as caught:
                client.messages.create(model="c", max_tokens=10, messages=USER)
        headers = raw.headers
        assert headers["anthropic-ratelimit-requests-limit"] == "6"
        assert headers["anthropic-ratelimit-requests-remaining"] == "1"
        assert headers["anthropic-ratelimit-tokens-limit"] == "600"
        reset = datetime.strptime(
            headers["anthropic-ratelimit-requests-reset"], "%Y-%m-%dT%H:%M:%SZ"
        ).replace(tzinfo=timezone.utc)
        assert before < reset
        error = caught.value
        assert error.body == {
            "type": "error",
            "error": {"type": "rate_limit_error", "message": error.body["error"]["message"]},
        }
        assert 0 < int(error.response.headers["retry-after-ms"]) <= 10_000


@pytest.mark.llm_server(rpm=120)  # bursts of 2, then 2 per second
def test_sdk_retries_honour_retry_after(llm_server: SimulatedServer) -> None:
    """The docs' back-off recipe: the SDK waits retry-after-ms and gets through."""
    with openai.OpenAI(base_url=llm_server.base_url, api_key="k", max_retries=10) as client:
        for i in range(6):
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": str(i)}]
            )
    stats = llm_server.stats()
    assert stats["requests"] == 6
    assert stats["rate_limited"] > 0


# -- servers unlike the providers' own --------------------------------------------------------


class TestTokenAccounting:
    """What one request costs against TPM, per provider; OTPM settles, ITPM charges the prompt."""

    @pytest.mark.parametrize(
        ("accounting", "charged"), [("sum", 300), ("max", 200), ("usage", 300)]
    )
    def test_up_front_charge(self, accounting: str, charged: int) -> None:
        limiter = RateLimiter(
            rpm=None, tpm=60_000, burst_seconds=1.0, token_accounting=accounting, clock=FakeClock()
        )
        decision = limiter.admit("k", Cost(prompt=100, max_output=200))
        assert decision.tokens is not None
        assert decision.tokens[1] == 1000 - charged

    @pytest.mark.parametrize(
        ("accounting", "charged", "refunded"),
        [("sum", 300, 0), ("max", 200, 0), ("usage", 300, 150)],
    )
    def test_only_usage_accounting_refunds(
        self, accounting: str, charged: int, refunded: int
    ) -> None:
        limiter = RateLimiter(
            rpm=None, tpm=60_000, burst_seconds=1.0, token_accounting=accounting, clock=FakeClock()
        )
        cost = Cost(prompt=100, max_output=200)
        limiter.admit("k", cost)
        limiter.settle("k", cost, used_output=50)
        after = limiter.admit("k", Cost(prompt=0, max_output=0)).tokens
        assert after is not None
        assert after[1] == 1000 - charged + refunded

    def test_otpm_charges_max_tokens_then_settles_and_itpm_charges_the_prompt(self) -> None:
        limiter = RateLimiter(
            rpm=None, tpm=None, itpm=6000, otpm=12_000, burst_seconds=1.0, clock=FakeClock()
        )
        cost = Cost(prompt=40, max_output=150)
        first = limiter.admit("k", cost).snapshots
        assert first["input-tokens"][1] == 100 - 40
        assert first["output-tokens"][1] == 200 - 150
        limiter.settle("k", cost, used_output=30)
        later = limiter.admit("k", Cost(prompt=0, max_output=0)).snapshots
        assert later["output-tokens"][1] == 200 - 30
        assert later["input-tokens"][1] == 100 - 40

    def test_refused_by_output_tokens(self) -> None:
        limiter = RateLimiter(rpm=None, tpm=None, otpm=600, burst_seconds=1.0, clock=FakeClock())
        assert limiter.admit("k", Cost(prompt=1, max_output=10)).admitted
        refused = limiter.admit("k", Cost(prompt=1, max_output=10))
        assert refused.limited_by == "output-tokens"


@pytest.mark.llm_server(rpm=60, burst_seconds=2.0, rate_limit_headers=False)
class TestNoRateLimitHeaders:
    """A gateway that says nothing but 429 and a whole-second retry-after."""

    def test_no_limit_headers_and_429_with_retry_after_only(
        self, llm_server: SimulatedServer
    ) -> None:
        responses = [_chat(llm_server) for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 429]
        for response in responses:
            assert not [h for h in response.headers if "ratelimit" in h.lower()]
        assert responses[2].headers["retry-after"] == "1"
        assert "retry-after-ms" not in responses[2].headers
        assert llm_server.stats()["rate_limited"] == 1


@pytest.mark.parametrize(("accounting", "second"), [("sum", 429), ("max", 429), ("usage", 200)])
def test_only_usage_accounting_makes_room_for_the_next_request(
    accounting: str, second: int
) -> None:
    # tpm 6000 holds 100 tokens. "hi" is 1 prompt token and its reply 19: sum and max
    # charge 61 and keep it, so a second request (61 more) does not fit; usage gives the
    # 41 unused tokens back when the first reply ends, so it does.
    with serve(tpm=6000, token_accounting=accounting) as server:
        first, then = (_chat(server, max_tokens=60) for _ in range(2))
    assert (first.status_code, then.status_code) == (200, second)


@pytest.mark.llm_server(
    rpm=600,
    header_overrides={"x-ratelimit-limit-requests": "0", "retry-after": "banana"},
    header_override_rate=0.5,
)
def test_header_overrides_on_a_share_of_responses(llm_server: SimulatedServer) -> None:
    limits = [_chat(llm_server).headers["x-ratelimit-limit-requests"] for _ in range(10)]
    assert "0" in limits
    assert "600" in limits


@pytest.mark.llm_server(rpm=60, header_overrides={"retry-after": "-5"})
def test_header_overrides_reach_429s(llm_server: SimulatedServer) -> None:
    responses = [_chat(llm_server) for _ in range(2)]
    assert responses[1].status_code == 429
    assert responses[1].headers["retry-after"] == "-5"


def _chat(server: SimulatedServer, **options: object) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": "m", "messages": USER, **options},
        headers={"Authorization": "Bearer k"},
    )
