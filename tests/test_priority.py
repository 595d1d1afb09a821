"""Priority lanes across processes: a batch process saturates a quota shared through Redis,
and a second process makes interactive calls, spaced out (issue 16).

Run through the benchmark's own scenario code (``bridge.bench.priority``), smaller: the
test asserts what the lanes are for, from each call's admission wait as the watcher hook
reports it (what ``bridge.otel`` exports) and from the server's counts. It compares the
two scenarios of one run with a wide margin, never a wall time: without lanes the
interactive calls queue behind a batch queue seconds deep; with lanes they do not.
"""

from __future__ import annotations

import argparse
import statistics

import pytest

from bridge.bench import priority
from bridge.testing import serve

pytestmark = [pytest.mark.redis, pytest.mark.timeout(240)]


def _args(redis_url: str) -> argparse.Namespace:
    return priority._parser().parse_args(
        ["--store", redis_url, "--calls", "6", "--spacing", "0.5", "--warmup", "2",
         "--batch-concurrency", "40", "--no-docs"]
    )  # fmt: skip


def test_interactive_calls_skip_the_batch_queue_and_the_batch_goes_on(redis_url: str) -> None:
    args = _args(redis_url)
    with serve(rpm=args.rpm, latency=args.latency, jitter=args.latency / 5) as server:
        args.base_url = server.base_url
        lanes = priority._scenario(args, server, "interactive")
        plain = priority._scenario(args, server, "batch")
    for scenario in (lanes, plain):
        assert len(scenario.waits) == args.calls  # every interactive call was answered
        assert scenario.failed == 0  # in either process
        assert scenario.batch_rate > 0  # the batch went on while they ran
    # Without lanes each interactive call waits behind the batch queue (40 deep at 10 a
    # second: seconds); with lanes it waits only behind other interactive calls.
    assert statistics.median(plain.waits) > 1.0
    assert statistics.median(lanes.waits) < 0.2 * statistics.median(plain.waits)
