"""``bridge.deadline()``: a call that cannot be admitted in time fails at once, unsent.

Against the simulated server, with its own counters as the evidence that nothing was
sent; no test asserts a wall time (how fast the decision is made is a benchmark figure).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from polling import poll

import bridge
from bridge.testing import SimulatedServer, expected_digest

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow


def caller(client: Any) -> Any:
    async def call(i: int) -> bool:
        text = f"deadline {i}"
        reply = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": text}]
        )
        return bool(reply.choices[0].message.content.startswith("digest=" + expected_digest(text)))

    return call


def test_the_deadline_scope_nests_and_checks_its_argument() -> None:
    from bridge._core._scope import time_left

    assert time_left() is None
    with bridge.deadline(10):
        outer = time_left()
        with bridge.deadline(100):  # a later inner deadline keeps the outer one
            assert time_left() <= outer  # type: ignore[operator]
        with bridge.deadline(1):
            assert time_left() <= 1  # type: ignore[operator]
    assert time_left() is None
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive, finite"), bridge.deadline(bad):
            pass


@pytest.mark.llm_server(rpm=6, latency=0.05)
def test_a_paused_endpoint_fails_at_once_without_sending(llm_server: SimulatedServer) -> None:
    """The issue's case: a 429 said retry-after 10; a call under deadline(1) is not sent."""
    client = bridge.openai(
        base_url=llm_server.base_url,
        api_key=f"sk-{uuid.uuid4().hex}",
        limits=bridge.Limits(rpm=None, tpm=None),  # unpaced, so the second one is refused
        retry=bridge.Retry(attempts=1),
    )
    call = caller(client)
    assert bridge.run(call(0))  # rpm 6 holds one request; the next gets a 429 ...
    with pytest.raises(openai.RateLimitError):
        bridge.run(call(1))  # ... whose retry-after (about 10 s) pauses the endpoint
    sent = llm_server.stats()["requests"] + llm_server.stats()["rate_limited"]
    with (
        pytest.raises(bridge.DeadlineExceeded, match=r"a 429 pause.*not sent") as caught,
        bridge.deadline(1),
    ):
        bridge.run(call(2))
    assert "would wait about" in str(caught.value)
    after = llm_server.stats()["requests"] + llm_server.stats()["rate_limited"]
    assert after == sent  # the server saw nothing


@pytest.mark.llm_server(latency=0.05)
def test_map_items_that_cannot_make_it_fail_and_the_others_are_kept(
    llm_server: SimulatedServer,
) -> None:
    client = bridge.openai(
        base_url=llm_server.base_url,
        api_key=f"sk-{uuid.uuid4().hex}",
        limits=bridge.Limits(rpm=120, tpm=None),  # 2 a second, a bucket of 1
    )
    with bridge.deadline(1.5):
        results = bridge.map(caller(client), range(10), concurrency=10, return_exceptions=True)
    done = [r for r in results if r is True]
    late = [r for r in results if isinstance(r, bridge.DeadlineExceeded)]
    assert len(done) + len(late) == 10  # each item either finished or missed the deadline
    assert done  # the first ones made it ...
    assert late  # ... and the queue behind them was told at once, not at 5 s
    assert llm_server.stats()["requests"] == len(done)  # nothing was sent for the late ones


@pytest.mark.llm_server(latency=5.0)
def test_a_request_is_cut_to_the_time_left(llm_server: SimulatedServer) -> None:
    client = bridge.openai(base_url=llm_server.base_url, api_key=f"sk-{uuid.uuid4().hex}")
    with pytest.raises((bridge.DeadlineExceeded, openai.APITimeoutError)), bridge.deadline(0.5):
        bridge.run(caller(client)(0))
    # The client hung up on the 5 s reply (the server counts a disconnect), and did not
    # try again past the deadline.
    poll(lambda: llm_server.stats()["disconnected"] == 1, timeout=30, what="the disconnect")
    assert llm_server.stats()["requests"] == 1


def test_deadline_exceeded_keeps_its_retry_after_through_pickle() -> None:
    """A Celery result carries the error to the web process, whose 503 needs the wait."""
    import pickle

    error = bridge.DeadlineExceeded("would wait 9 s for the RPM limit", retry_after=9.2)
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert isinstance(again, bridge.DeadlineExceeded)
    assert (str(again), again.retry_after) == (str(error), 9.2)
