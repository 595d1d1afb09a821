"""``bridge.stats()``: what a snapshot shows for limits learned from a real server's headers."""

from __future__ import annotations

import hashlib
import uuid

import pytest

import bridge
from bridge._admission._stats import Recorder
from bridge.testing import SimulatedServer

pytest.importorskip("openai")


def test_snapshot_shows_limits_as_whole_numbers() -> None:
    # What a per-second rate gives back when it is turned into a per-minute one.
    snapshot = Recorder("endpoint").snapshot(4, None, 2000 / 60 * 60)
    assert snapshot.tpm == 2000
    assert isinstance(snapshot.tpm, int)
    assert snapshot.rpm is None


@pytest.mark.slow
@pytest.mark.llm_server(rpm=1200, tpm=2000)
def test_learned_tpm_is_a_whole_number(b: bridge.Bridge, llm_server: SimulatedServer) -> None:
    key = f"sk-test-{uuid.uuid4().hex}"
    client = bridge.openai(base_url=llm_server.base_url, api_key=key)

    async def ask() -> None:
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        await client.close()

    b.run(ask())
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    [stats] = [s for s in bridge.stats().values() if s.endpoint.endswith(digest)]
    # 2000 tokens a minute is 33.33... a second: the float round trip used to show here.
    assert (stats.rpm, stats.tpm) == (1200, 2000)
    assert isinstance(stats.tpm, int)
    assert repr(stats).endswith("rpm=1200, tpm=2000)")
