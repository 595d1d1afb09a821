"""The per-endpoint controller on a fake clock: pacing, the opening window, pauses,
rate discovery, learning from headers, token accounting, and headers as untrusted input.

These drive one :class:`Controller` through its admission interface (``admit_sync``,
``on_response``, ``settle_tokens``, ``snapshot``) and read what a request would wait from
``_step``, the one pure decision step; the end-to-end behaviour against the simulated
server is in test_clients.py and test_first_contact.py.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import bridge
from bridge._admission._controller import OPENING_WINDOW, Controller, Ticket
from bridge._admission._discovery import BETA, CEILING, RateFinder
from bridge._admission._endpoint import endpoint_of
from bridge._admission._headers import read_limits, retry_after
from bridge._admission._tokens import NO_TOKENS, Estimate, estimate, resolve_accounting


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(limits: bridge.Limits, clock: Clock | None = None, accounting: str = "sum") -> Controller:
    return Controller(
        endpoint_of("http://h:1/v1/chat/completions", "sk-secret"),
        limits,
        None,
        clock or Clock(),
        accounting=accounting,  # type: ignore[arg-type]
    )


def send(c: Controller, tokens: Estimate = NO_TOKENS) -> Ticket:
    """Admit one request (it must not have to wait) and count it sent."""
    return c.admit_sync(lambda: tokens)


def sent(c: Controller, tokens: Estimate = NO_TOKENS) -> Ticket:
    """A ticket for a request sent now, whatever the buckets say (no waiting)."""
    return c._ticket(c._charges(tokens))


def wait_of(c: Controller, tokens: Estimate = NO_TOKENS) -> float:
    """What one more request would wait now (and reserve its place)."""
    return c._step(c._charges(tokens), None).wait


def no_complaints(header: str, problem: str) -> None:
    raise AssertionError(f"unexpected complaint about {header}: {problem}")


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

    def test_user_info_and_query_never_reach_the_label(self) -> None:
        ep = endpoint_of("http://user:PASSWORD@h:1/v1/chat/completions?key=QSECRET&v=2", "")
        assert ep.base == "http://h:1/v1"
        assert "PASSWORD" not in ep.label
        assert "QSECRET" not in ep.label
        assert "user" not in ep.label

    def test_query_credentials_count_as_the_key(self) -> None:
        one = endpoint_of("http://h:1/v1/x?key=a", "")
        assert one != endpoint_of("http://h:1/v1/x?key=b", "")
        assert one == endpoint_of("http://h:1/v1/y?key=a&api-version=2", "")
        assert one.key_hash != "none"


class TestPacing:
    def test_rpm_bucket_half_a_second_then_paced(self) -> None:
        c = make(bridge.Limits(rpm=1200, tpm=None))  # 20/s, bucket of 10
        waits = [wait_of(c) for _ in range(12)]
        assert waits[:10] == [0.0] * 10
        assert waits[10] == pytest.approx(0.05)
        assert waits[11] == pytest.approx(0.10)

    def test_no_limits_no_wait(self) -> None:
        c = make(bridge.Limits(rpm=None, tpm=None))
        assert all(wait_of(c, Estimate(10**6, 10**6)) == 0.0 for _ in range(100))

    @pytest.mark.parametrize(("accounting", "charge"), [("max", 200), ("sum", 300), ("usage", 300)])
    def test_tokens_charged_as_the_provider_charges(self, accounting: str, charge: int) -> None:
        c = make(bridge.Limits(rpm=None, tpm=60_000), accounting=accounting)  # bucket of 500
        request = Estimate(prompt=100, output=200)
        assert wait_of(c, request) == 0.0
        assert wait_of(c, request) == pytest.approx(max(0.0, (2 * charge - 500) / 1000))

    @pytest.mark.parametrize(("accounting", "refunded"), [("max", 0), ("sum", 0), ("usage", 280)])
    def test_only_usage_accounting_refunds_within_the_window(
        self, accounting: str, refunded: int
    ) -> None:
        c = make(bridge.Limits(rpm=None, tpm=60_000), accounting=accounting)
        ticket = send(c, Estimate(prompt=100, output=200))
        level = c._buckets["tokens"].level_of("interactive")
        c.settle_tokens(ticket, 10, 10)
        assert c._buckets["tokens"].level_of("interactive") == pytest.approx(level + refunded)
        assert (c.stats.tokens_in, c.stats.tokens_out) == (10, 10)

    def test_anthropic_input_and_output_settle_to_the_real_counts(self) -> None:
        c = make(bridge.Limits(rpm=None, tpm=None, input_tpm=6000, output_tpm=6000))
        ticket = send(c, Estimate(prompt=20, output=40))
        assert c._buckets["input_tokens"].level_of("interactive") == 50 - 20
        assert c._buckets["output_tokens"].level_of("interactive") == 50 - 40
        c.settle_tokens(ticket, 25, 5)  # the prompt was longer, the reply shorter
        assert c._buckets["input_tokens"].level_of("interactive") == 50 - 25
        assert c._buckets["output_tokens"].level_of("interactive") == 50 - 5


class TestOpeningWindow:
    """No serialised probe: a fresh endpoint lets OPENING_WINDOW requests overlap at once."""

    def test_a_fresh_endpoint_opens_with_the_window(self) -> None:
        c = make(bridge.Limits())
        tickets = [send(c) for _ in range(OPENING_WINDOW)]
        assert c.stats.in_flight == OPENING_WINDOW
        assert c._gate.active == c._gate.limit == OPENING_WINDOW
        for t in tickets:
            c.finish(t)

    def test_clean_answers_double_it_up_to_the_cap(self) -> None:
        c = make(bridge.Limits(max_in_flight=100))
        c.on_response(send(c), 200, {})
        assert c.snapshot().max_in_flight == 2 * OPENING_WINDOW
        c.on_response(send(c), 200, {})
        c.on_response(send(c), 200, {})
        assert c.snapshot().max_in_flight == 100

    def test_headers_open_it_fully(self) -> None:
        c = make(bridge.Limits(max_in_flight=500))
        headers = {"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "99"}
        c.on_response(send(c), 200, headers)
        assert c.snapshot().max_in_flight == 500

    def test_a_429_opens_it_fully_and_rates_take_over(self) -> None:
        c = make(bridge.Limits(max_in_flight=500))
        c.on_response(send(c), 429, {"retry-after": "1"})
        assert c.snapshot().max_in_flight == 500

    def test_configured_limits_need_no_opening(self) -> None:
        c = make(bridge.Limits(max_in_flight=500, rpm=600, tpm=None))
        assert c.snapshot().max_in_flight == 500


class TestPause:
    """A 429 from a server whose limits are known pauses the endpoint for its retry-after."""

    def test_429_pauses_whole_endpoint(self) -> None:
        c = make(bridge.Limits(rpm=6000, tpm=None))
        before = c._step(c._charges(NO_TOKENS), None)
        assert before.wait == 0.0
        c.on_response(send(c), 429, {"retry-after-ms": "1500", "retry-after": "2"})
        assert wait_of(c) >= 1.5
        # A request that reserved before the pause must reserve again, and wait for it.
        again = c._step(c._charges(NO_TOKENS), before.epoch)
        assert again.reserved
        assert again.wait >= 1.5
        assert c.stats.rate_limited == 1

    @pytest.mark.parametrize("header", ["86400", "inf", "nan", "-5", "soon"])
    def test_pause_is_capped_and_absurd_waits_ignored(self, header: str) -> None:
        c = make(bridge.Limits(rpm=None, tpm=None))
        c.on_response(send(c), 429, {"retry-after": header}, max_pause=2.0)
        assert 0.0 < wait_of(c) <= 2.0  # never a day, never for ever, never a crash

    def test_end_of_pause_is_no_burst(self) -> None:
        clock = Clock()
        c = make(bridge.Limits(rpm=1200, tpm=None), clock)
        c.on_response(send(c), 429, {"retry-after-ms": "1000"})
        clock.now += 1.0
        waits = [wait_of(c) for _ in range(5)]
        assert all(w > 0 for w in waits)
        assert waits == sorted(waits)

    def test_a_burst_of_429s_voids_reservations_instead_of_stacking_them(self) -> None:
        clock = Clock()
        c = make(bridge.Limits(rpm=1200, tpm=None), clock)  # 20/s
        sleepers = [c._step(c._charges(NO_TOKENS), None) for _ in range(40)]
        for i in range(10):  # ten 429s, each naming a slightly later end
            c.on_response(sent(c), 429, {"retry-after-ms": str(100 + i)})
        # Every sleeper reserves again once, after the pause: 40 requests at 20/s, not 80.
        redone = [c._step(c._charges(NO_TOKENS), s.epoch) for s in sleepers]
        assert max(r.wait for r in redone) < 0.11 + 40 / 20 + 0.5


class TestRateDiscovery:
    """A server that sends nothing but 429 and retry-after: the rate is found, then held."""

    def test_first_429_takes_what_the_server_took_over_the_time_plus_its_burst(self) -> None:
        finder = RateFinder()
        for i in range(24):
            finder.sent(100.0 + i * 0.001)
        assert finder.rate(100.03) is None
        finder.rejected(100.023, 100.03)  # one of the burst: 23 got through, maybe
        for _ in range(3):  # three more from the same burst come back: 20 got through
            finder.rejected(100.022, 100.031)
        # 20 taken over the 0.03 s since the first send plus the server's 1 s of quota.
        assert finder.rate(100.031) == pytest.approx(BETA * 20 / 1.03, rel=0.01)

    def test_one_cut_per_window_and_cubic_recovery(self) -> None:
        finder = RateFinder()
        finder.sent(99.0)
        finder.rejected(99.0, 99.01)  # a first event, long before
        for i in range(200):
            finder.sent(100.0 + i * 0.05)
        finder.rejected(109.95, 110.0)
        first = finder.rate(110.0)
        assert first is not None
        finder.rejected(109.9, 110.001)  # sent before the cut: the same event, no second cut
        assert finder.rate(110.001) == pytest.approx(first, rel=0.01)
        w_max = first / BETA
        assert finder.rate(110.0 + 1.0) < w_max  # type: ignore[operator]
        assert finder.rate(110.0 + 3.0) == pytest.approx(w_max, rel=0.05)  # back in ~2.5 s

    def test_the_found_rate_is_held_while_idle_not_forgotten(self) -> None:
        finder = RateFinder()
        for i in range(20):
            finder.sent(100.0 + i * 0.01)
        finder.rejected(100.19, 100.2)
        w_max = finder.rate(100.2) / BETA  # type: ignore[operator]
        assert finder.rate(100.2 + 600.0) == pytest.approx(CEILING * w_max)  # an idle 10 min

    def test_the_ceiling_moves_only_while_sends_press_against_it(self) -> None:
        finder = RateFinder()
        for i in range(20):
            finder.sent(100.0 + i * 0.01)
        finder.rejected(100.19, 100.2)
        w_max = finder.rate(100.2) / BETA  # type: ignore[operator]
        later = 100.2 + 60.0
        assert finder.rate(later) == pytest.approx(CEILING * w_max)  # idle: held
        for i in range(int(CEILING * w_max) + 1):  # a second of sends at the ceiling
            finder.sent(later - 0.9 + i / (CEILING * w_max + 1))
        assert finder.rate(later) == pytest.approx(CEILING * CEILING * w_max)  # moved up

    def test_a_later_cut_uses_what_the_server_took_since_the_last(self) -> None:
        finder = RateFinder()
        finder.sent(100.0)
        finder.rejected(100.0, 100.01)
        for i in range(200):  # 10 s at 20/s, then one refused
            finder.sent(100.01 + i * 0.05)
        finder.rejected(110.0, 110.01)
        assert finder.rate(110.01) == pytest.approx(BETA * 199 / 11.0, rel=0.02)

    def test_the_controller_paces_at_the_found_rate(self) -> None:
        clock = Clock()
        c = make(bridge.Limits(), clock)
        burst = [send(c) for _ in range(OPENING_WINDOW)]
        clock.now += 0.01
        for t in burst[20:]:  # the server took 20 and refused 4
            c.on_response(t, 429, {"retry-after": "1"})
        assert c.rates[0] == pytest.approx(60 * BETA * 20, rel=0.01)
        assert wait_of(c) > 0  # the server's bucket is empty now; so is ours
        assert c.stats.rate_limited == 4

    def test_headers_end_discovery(self) -> None:
        c = make(bridge.Limits())
        c.on_response(sent(c), 429, {"retry-after": "1"})
        assert c.rates[0] is not None  # found from the 429
        headers = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "5"}
        c.on_response(sent(c), 200, headers)
        assert c.rates[0] == 600.0  # told: the server's word replaces the guess
        c.on_response(sent(c), 429, {"retry-after": "1"})
        assert c.rates[0] == 600.0  # and a later bare 429 pauses, it does not guess again


class TestLanes:
    """Interactive before batch: its own bucket, its own line, and a share of the rate."""

    def test_an_interactive_request_does_not_wait_behind_the_batch_queue(self) -> None:
        c = make(bridge.Limits(rpm=600, tpm=None))  # 10 a second
        with bridge.priority("batch"):
            batch = [wait_of(c) for _ in range(50)]
        assert batch[-1] > 4  # the batch queue: seconds deep
        with bridge.priority("interactive"):
            first = wait_of(c)
        assert first <= 1 / (0.3 * 10)  # its own bucket, at its 30 % share

    def test_batch_keeps_at_least_its_share_and_takes_all_when_interactive_is_gone(
        self,
    ) -> None:
        clock = Clock()
        c = make(bridge.Limits(rpm=600, tpm=None, reserve_interactive=0.25), clock)
        with bridge.priority("interactive"):
            wait_of(c)
        with bridge.priority("batch"):
            shared = [wait_of(c) for _ in range(30)]
        assert shared[-1] - shared[-2] == pytest.approx(1 / 7.5)  # 75 % of 10 a second
        clock.now += 10.0  # no interactive request for a while
        with bridge.priority("batch"):
            alone = [wait_of(c) for _ in range(30)]
        assert alone[-1] - alone[-2] == pytest.approx(1 / 10)  # the whole rate again

    def test_an_interactive_request_voids_the_batch_reservations_made_at_the_whole_rate(
        self,
    ) -> None:
        c = make(bridge.Limits(rpm=600, tpm=None))
        with bridge.priority("batch"):
            asleep = c._step(c._charges(NO_TOKENS), None)
            for _ in range(20):
                wait_of(c)
        with bridge.priority("interactive"):
            wait_of(c)
        with bridge.priority("batch"):
            redone = c._step(c._charges(NO_TOKENS), asleep.epoch)
        assert redone.reserved  # made again, at the batch share of the rate

    def test_interactive_waiters_get_slots_before_batch_ones(self) -> None:
        c = make(bridge.Limits(max_in_flight=1, rpm=None, tpm=None))
        first = send(c)
        order: list[str] = []
        for lane in ("batch", "batch", "interactive"):
            assert c._gate.enter_or_wait(lambda lane=lane: order.append(lane), lane) is not None
        c.finish(first)
        assert order == ["interactive"]  # the slot went to the interactive waiter


class TestLearning:
    def test_openai_headers(self) -> None:
        c = make(bridge.Limits())
        c.on_response(
            send(c),
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
        waits = [wait_of(c) for _ in range(4)]
        assert waits[:3] == [0.0, 0.0, 0.0]  # what the server says remains, not more
        assert waits[3] > 0

    def test_the_servers_tighter_view_wins_less_what_was_sent_since(self) -> None:
        c = make(bridge.Limits(rpm=None, tpm=60_000))
        first = send(c, Estimate(100, 100))
        send(c, Estimate(100, 100))  # sent after `first`, before its answer
        c.on_response(
            first,
            200,
            {"x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "250"},
        )
        assert c._buckets["tokens"].level_of("interactive") == 250 - 200

    def test_anthropic_headers(self) -> None:
        c = make(bridge.Limits())
        c.on_response(
            send(c),
            200,
            {
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "49",
                "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:00Z",
                "anthropic-ratelimit-tokens-limit": "90000",
                "anthropic-ratelimit-tokens-remaining": "9000",
                "anthropic-ratelimit-input-tokens-limit": "40000",
                "anthropic-ratelimit-input-tokens-remaining": "4000",
                "anthropic-ratelimit-output-tokens-limit": "8000",
                "anthropic-ratelimit-output-tokens-remaining": "800",
            },
        )
        assert c.rates == (50.0, None)  # the split input/output limits beat the total
        assert sorted(c._buckets) == ["input_tokens", "output_tokens", "requests"]

    def test_configured_limits_are_not_overridden(self) -> None:
        c = make(bridge.Limits(rpm=1200, tpm=None))
        c.on_response(
            send(c),
            200,
            {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "1"},
        )
        assert c.rates == (1200.0, None)

    def test_stats_round_learned_limits(self) -> None:
        c = make(bridge.Limits())
        headers = {"x-ratelimit-limit-tokens": "2000", "x-ratelimit-remaining-tokens": "5"}
        c.on_response(send(c), 200, headers)
        assert c.snapshot().tpm == 2000


# -- headers are untrusted input: one test per bad value ---------------------------------------

_LIMIT = "x-ratelimit-limit-requests"
_REMAINING = "x-ratelimit-remaining-requests"

BAD_HEADERS = {
    "token limit of 1": {"x-ratelimit-limit-tokens": "1", "x-ratelimit-remaining-tokens": "0"},
    "zero limit": {_LIMIT: "0", _REMAINING: "0"},
    "negative limit": {_LIMIT: "-600", _REMAINING: "5"},
    "tiny limit": {_LIMIT: "1e-9", _REMAINING: "0"},
    "nan limit": {_LIMIT: "nan", _REMAINING: "5"},
    "infinite limit": {_LIMIT: "inf", _REMAINING: "5"},
    "absurd limit": {_LIMIT: "1e30", _REMAINING: "5"},
    "unparseable limit": {_LIMIT: "lots", _REMAINING: "5"},
    "limit without remaining": {_LIMIT: "600"},
    "remaining without limit": {_REMAINING: "5"},
    "negative remaining": {_LIMIT: "600", _REMAINING: "-40"},
    "remaining above limit": {_LIMIT: "600", _REMAINING: "90000"},
    "nan remaining": {_LIMIT: "600", _REMAINING: "nan"},
    "unparseable remaining": {_LIMIT: "600", _REMAINING: "some"},
    "unparseable reset": {_LIMIT: "600", _REMAINING: "5", "x-ratelimit-reset-requests": "soon"},
    "zero token limit": {"x-ratelimit-limit-tokens": "0", "x-ratelimit-remaining-tokens": "0"},
    "anthropic zero limit": {
        "anthropic-ratelimit-requests-limit": "0",
        "anthropic-ratelimit-requests-remaining": "0",
    },
    "anthropic bad reset": {
        "anthropic-ratelimit-requests-limit": "600",
        "anthropic-ratelimit-requests-remaining": "5",
        "anthropic-ratelimit-requests-reset": "yesterday-ish",
    },
}


@pytest.mark.parametrize("headers", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
@pytest.mark.parametrize("status", [200, 429])
def test_no_header_can_break_or_stall_an_endpoint(
    headers: dict[str, str], status: int, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    c = make(bridge.Limits(), clock)
    good = {_LIMIT: "600", _REMAINING: "500"}
    c.on_response(sent(c), 200, good)  # what the server really allows: 10 per second
    with caplog.at_level(logging.WARNING, logger="bridge._admission"):
        for _ in range(3):
            c.on_response(sent(c), status, headers, max_pause=2.0)
    rpm, tpm = c.rates
    assert rpm == 600  # nothing absurd replaced it
    assert tpm is None or 100 <= tpm <= 1e11
    clock.now += 2.0  # a pause the broken response asked for is over
    c.on_response(sent(c), 200, good)
    # The endpoint admits at its real rate again: 5 more requests within half a second.
    assert max(wait_of(c) for _ in range(5)) <= 0.5
    bad = [r for r in caplog.records if "bad" in r.getMessage()]
    assert len(bad) <= len(headers)  # said once per header, not once per response


def test_a_limit_is_the_median_of_recent_readings_and_a_change_voids_reservations() -> None:
    clock = Clock()
    c = make(bridge.Limits(), clock)
    for _ in range(3):
        c.on_response(sent(c), 200, {_LIMIT: "600", _REMAINING: "500"})
    c.on_response(sent(c), 200, {_LIMIT: "1", _REMAINING: "0"})  # one proxy's broken header
    c.on_response(sent(c), 200, {_LIMIT: "1", _REMAINING: "0"})  # and another
    assert c.rates[0] == 600  # two broken readings in five do not move the median
    for _ in range(3):  # most recent answers say it: the limit really changed
        c.on_response(sent(c), 200, {_LIMIT: "60", _REMAINING: "0"})
    assert c.rates[0] == 60
    asleep = c._step(c._charges(NO_TOKENS), None)
    assert asleep.wait > 0.5  # one a second now
    for _ in range(3):
        c.on_response(sent(c), 200, {_LIMIT: "600", _REMAINING: "500"})  # back up
    assert c.rates[0] == 600
    redone = c._step(c._charges(NO_TOKENS), asleep.epoch)
    assert redone.reserved  # the sleeper's reservation was void: it reserves again
    assert redone.wait <= 0.2  # at the real rate


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
        ({"retry-after": "3"}, 3.0),
        ({}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after-ms": "x", "retry-after": "2"}, 2.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers, lambda header, problem: None) == seconds


def test_good_headers_raise_no_complaint() -> None:
    headers = {_LIMIT: "600", _REMAINING: "5", "retry-after-ms": "20"}
    assert read_limits(headers, no_complaints)[0].limit == 600
    assert retry_after(headers, no_complaints) == 0.02


# -- token estimates and accounting policies ---------------------------------------------------


class TestTokens:
    def test_estimate_reads_prompt_and_output_cap(self) -> None:
        body = b'{"messages":[{"role":"user","content":"12345678"}],"max_tokens":50}'
        assert estimate("POST", "/v1/chat/completions", body) == Estimate(2, 50)

    @pytest.mark.parametrize("name", ["max_completion_tokens", "max_output_tokens", "max_tokens"])
    def test_every_output_cap_name(self, name: str) -> None:
        body = f'{{"input":"abcd","{name}":7}}'.encode()
        assert estimate("POST", "/v1/responses", body) == Estimate(1, 7)

    def test_embeddings_have_no_output_and_garbage_costs_nothing(self) -> None:
        assert estimate("POST", "/v1/embeddings", b'{"input":"abcdefgh"}') == Estimate(2, 0)
        assert estimate("POST", "/v1/chat/completions", b"not json") == NO_TOKENS
        deep = b"[" * 100_000 + b"]" * 100_000
        assert estimate("POST", "/v1/chat/completions", deep) == NO_TOKENS

    @pytest.mark.parametrize(
        ("url", "policy"),
        [
            ("https://api.openai.com/v1/chat/completions", "max"),
            ("https://x.openai.azure.com/openai/deployments/d/chat/completions", "sum"),
            ("https://api.anthropic.com/v1/messages", "usage"),
            ("http://127.0.0.1:8000/v1/messages", "usage"),
            ("http://127.0.0.1:8000/v1/chat/completions", "sum"),
        ],
    )
    def test_auto_accounting_by_provider(self, url: str, policy: str) -> None:
        assert resolve_accounting("auto", url) == policy
        assert resolve_accounting("usage", url) == "usage"

    def test_bad_accounting_setting_says_the_choices(self) -> None:
        with pytest.raises(ValueError, match="'max', 'sum', 'usage'"):
            bridge.Limits(token_accounting="both")  # type: ignore[arg-type]


class TestGate:
    def test_cancelled_waiter_gives_its_slot_back(self) -> None:
        c = make(bridge.Limits(max_in_flight=1, rpm=None, tpm=None))

        async def scenario() -> int:
            first = await c.admit_async(lambda: NO_TOKENS)
            waiter = asyncio.ensure_future(c.admit_async(lambda: NO_TOKENS))
            await asyncio.sleep(0)
            assert c.stats.queued == 1
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            c.finish(first)
            third = await asyncio.wait_for(c.admit_async(lambda: NO_TOKENS), 5)
            c.finish(third)
            return c._gate.active

        assert asyncio.run(scenario()) == 0
        assert c.stats.queued == 0
        assert c.stats.in_flight == 0

    def test_waiter_on_a_closed_loop_does_not_keep_the_slot(self) -> None:
        c = make(bridge.Limits(max_in_flight=1, rpm=None, tpm=None))
        first = send(c)

        def closed_loop_wake() -> None:  # what call_soon_threadsafe does on a closed loop
            raise RuntimeError("Event loop is closed")

        assert c._gate.enter_or_wait(closed_loop_wake) is not None  # queued behind `first`
        c.finish(first)  # hands the slot on; the orphan cannot take it
        assert c._gate.active == 0
        later = send(c)  # would block for ever had the slot leaked
        c.finish(later)

    def test_tokens_are_estimated_once_the_slot_is_granted(self) -> None:
        c = make(bridge.Limits(max_in_flight=1, rpm=None, tpm=None))
        calls: list[int] = []
        first = c.admit_sync(lambda: calls.append(1) or NO_TOKENS)  # type: ignore[func-returns-value]
        assert calls == [1]
        c.finish(first)
