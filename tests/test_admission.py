"""The per-endpoint controller, driven by a fake clock: pacing, pauses, AIMD, learning."""

from __future__ import annotations

import asyncio

import pytest

import bridge
from bridge._admission import (
    Controller,
    Ticket,
    endpoint_of,
    parse_duration,
    read_limits,
    retry_after,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(limits: bridge.Limits, clock: Clock) -> Controller:
    return Controller(
        endpoint_of("http://h:1/v1/chat/completions", "sk-secret"), limits, None, clock
    )


def ticket(c: Controller) -> Ticket:
    return c._ticket(0)


class TestEndpoint:
    def test_key_is_hashed_and_path_cut_at_v1(self) -> None:
        ep = endpoint_of("https://api.example.com:443/v1/chat/completions?x=1", "sk-secret")
        assert ep.base == "https://api.example.com:443/v1"
        assert "sk-secret" not in ep.label
        assert len(ep.key_hash) == 12

    def test_same_key_same_endpoint(self) -> None:
        a = endpoint_of("http://h:1/v1/messages", "k")
        b = endpoint_of("http://h:1/v1/embeddings", "k")
        assert a == b
        assert a != endpoint_of("http://h:1/v1/messages", "other")


class TestPacing:
    def test_rpm_bucket_half_a_second_then_paced(self) -> None:
        clock = Clock()
        c = make(bridge.Limits(rpm=1200, tpm=None), clock)  # 20/s, bucket of 10
        waits = [c._step(0, None).wait for _ in range(12)]
        assert waits[:10] == [0.0] * 10
        assert waits[10] == pytest.approx(0.05)
        assert waits[11] == pytest.approx(0.10)

    def test_tpm_reserves_tokens(self) -> None:
        clock = Clock()
        c = make(bridge.Limits(rpm=None, tpm=6000), clock)  # 100/s, bucket of 50
        assert c._step(50, None).wait == 0.0
        assert c._step(100, None).wait == pytest.approx(1.0)

    def test_refund_from_usage(self) -> None:
        clock = Clock()
        c = make(bridge.Limits(rpm=None, tpm=6000), clock)
        t = Ticket(tokens=50, seq=1, token_seq=50, sent_at=clock.now)
        assert c._step(50, None).wait == 0.0
        c.settle_tokens(t, 10, 10)  # 30 of the 50 come back
        assert c._step(30, None).wait == 0.0
        assert c.stats.tokens_in == 10
        assert c.stats.tokens_out == 10

    def test_no_limits_no_wait(self) -> None:
        c = make(bridge.Limits(rpm=None, tpm=None), Clock())
        assert all(c._step(10**6, None).wait == 0.0 for _ in range(100))


class TestPause:
    def test_429_pauses_whole_endpoint(self) -> None:
        clock = Clock()
        c = make(bridge.Limits(rpm=None, tpm=None), clock)
        before = c._step(0, None)
        assert before.wait == 0.0
        c.on_response(ticket(c), 429, {"retry-after-ms": "1500", "retry-after": "2"})
        assert c._step(0, None).wait == pytest.approx(1.5)
        # A request that reserved before the pause must reserve again, and wait for it.
        again = c._step(0, before.epoch)
        assert again.reserved
        assert again.wait == pytest.approx(1.5)
        assert c.stats.rate_limited == 1

    @pytest.mark.parametrize("header", ["86400", "inf", "nan"])
    def test_pause_is_capped_and_absurd_waits_ignored(self, header: str) -> None:
        c = make(bridge.Limits(rpm=None, tpm=None), Clock())
        c.on_response(ticket(c), 429, {"retry-after": header}, max_pause=2.0)
        wait = c._step(0, None).wait
        assert wait <= 2.0  # never a day, never for ever
        assert wait > 0.0

    def test_end_of_pause_is_no_burst(self) -> None:
        clock = Clock()
        c = make(bridge.Limits(rpm=1200, tpm=None), clock)
        c.on_response(ticket(c), 429, {"retry-after-ms": "1000"})
        clock.now += 1.0
        waits = [c._step(0, None).wait for _ in range(5)]
        assert all(w > 0 for w in waits)
        assert waits == sorted(waits)

    def test_aimd(self) -> None:
        clock = Clock()
        c = make(bridge.Limits(concurrency=16, rpm=None, tpm=None), clock)
        c.on_response(ticket(c), 429, {"retry-after-ms": "100"})
        assert c._cap == 8
        c.on_response(ticket(c), 429, {"retry-after-ms": "100"})  # same burst: no second cut
        assert c._cap == 8
        for _ in range(8):
            c.on_response(ticket(c), 200, {})
        assert c._cap == 9
        assert c._gate.limit == 9


class TestLearning:
    def test_openai_headers(self) -> None:
        clock = Clock()
        c = make(bridge.Limits(), clock)
        assert c._gate.limit == 1  # one probe until the first answer
        c.on_response(
            ticket(c),
            200,
            {
                "x-ratelimit-limit-requests": "600",
                "x-ratelimit-remaining-requests": "3",
                "x-ratelimit-reset-requests": "100ms",
                "x-ratelimit-limit-tokens": "60000",
                "x-ratelimit-remaining-tokens": "59000",
            },
        )
        assert c.rates == (600.0, 60000.0)
        assert c._gate.limit == bridge.Limits().concurrency
        waits = [c._step(0, None).wait for _ in range(4)]
        assert waits[:3] == [0.0, 0.0, 0.0]  # what the server says remains, not more
        assert waits[3] > 0

    def test_anthropic_headers(self) -> None:
        c = make(bridge.Limits(), Clock())
        c.on_response(
            ticket(c),
            200,
            {
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "49",
                "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:00Z",
            },
        )
        assert c.rates == (50.0, None)

    def test_configured_limits_are_not_overridden(self) -> None:
        c = make(bridge.Limits(rpm=1200, tpm=None), Clock())
        c.on_response(
            ticket(c),
            200,
            {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "1"},
        )
        assert c.rates == (1200.0, None)

    def test_no_headers_ends_probe(self) -> None:
        c = make(bridge.Limits(), Clock())
        c.on_response(ticket(c), 200, {})
        assert c.rates == (None, None)
        assert c._gate.limit == bridge.Limits().concurrency


class TestHeaders:
    def test_retry_after(self) -> None:
        assert retry_after({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
        assert retry_after({"retry-after": "3"}) == 3.0
        assert retry_after({}) is None
        assert retry_after({"retry-after": "soon"}) is None

    def test_read_limits_ignores_garbage(self) -> None:
        assert (
            read_limits({"x-ratelimit-limit-requests": "x", "x-ratelimit-remaining-requests": "1"})
            == {}
        )

    @pytest.mark.parametrize(
        ("text", "seconds"), [("20ms", 0.02), ("1.5s", 1.5), ("6m0s", 360.0), ("1h2m3s", 3723.0)]
    )
    def test_durations(self, text: str, seconds: float) -> None:
        assert parse_duration(text) == pytest.approx(seconds)


class TestGate:
    def test_cancelled_waiter_gives_its_slot_back(self) -> None:
        c = make(bridge.Limits(concurrency=1, rpm=None, tpm=None), Clock())

        async def scenario() -> int:
            first = await c.admit_async(0)
            waiter = asyncio.ensure_future(c.admit_async(0))
            await asyncio.sleep(0)
            assert c.stats.queued == 1
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            c.finish(first)
            third = await asyncio.wait_for(c.admit_async(0), 5)
            c.finish(third)
            return c._gate.active

        assert asyncio.run(scenario()) == 0
        assert c.stats.queued == 0
        assert c.stats.in_flight == 0

    def test_waiter_on_a_closed_loop_does_not_keep_the_slot(self) -> None:
        c = make(bridge.Limits(concurrency=1, rpm=None, tpm=None), Clock())
        first = c.admit_sync(0)

        def closed_loop_wake() -> None:  # what call_soon_threadsafe does on a closed loop
            raise RuntimeError("Event loop is closed")

        assert c._gate.enter_or_wait(closed_loop_wake) is not None  # queued behind `first`
        c.finish(first)  # hands the slot on; the orphan cannot take it
        assert c._gate.active == 0
        later = c.admit_sync(0)  # would block for ever had the slot leaked
        c.finish(later)
