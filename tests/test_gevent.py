"""Under gevent monkey-patching the loop stays on a real OS thread and waiting is cooperative.

gevent's patching is process-wide and cannot be undone, so the check runs in a child process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("gevent", reason="gevent is in the test extra; install .[test]")

SCRIPT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import asyncio, json, threading, time
    import gevent
    import bridge

    main_native = threading.get_native_id()

    in_flight = peak = 0
    all_in = asyncio.Event()

    async def slow(x):
        global in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 10:
            all_in.set()
        try:
            await asyncio.wait_for(all_in.wait(), 10)
        except asyncio.TimeoutError:
            pass
        in_flight -= 1
        return x, threading.get_native_id()

    def blocking(x):
        time.sleep(0.2)  # patched: cooperative inside a greenlet, a real sleep here
        return x, threading.get_native_id()

    async def tokens():
        for word in ("a", "b", "c"):
            await asyncio.sleep(0)
            yield word

    greenlets = [gevent.spawn(bridge.run, slow(i)) for i in range(10)]
    gevent.joinall(greenlets, timeout=30, raise_error=True)
    peak_during_run = peak
    run_results = [g.value for g in greenlets]

    mapped = bridge.map(blocking, range(4), concurrency=4)
    streamed = list(bridge.iterate(tokens()))
    imapped = list(bridge.imap(slow, range(5), concurrency=5))

    async def via_to_thread():
        return await bridge.to_thread(threading.get_native_id)

    async def resolve_and_offload():
        # Both go through the loop's default executor: DNS for "localhost", and to_thread.
        infos = await asyncio.get_running_loop().getaddrinfo("localhost", 80)
        slept = await asyncio.wait_for(asyncio.to_thread(time.sleep, 0.05), 10)
        return bool(infos) and slept is None

    real_lock = monkey.get_original("_thread", "allocate_lock")()
    running = pool_peak = 0

    def counted(x):
        global running, pool_peak
        with real_lock:
            running += 1
            pool_peak = max(pool_peak, running)
        time.sleep(0.3)
        with real_lock:
            running -= 1
        return x

    bridge.map(counted, range(2), concurrency=2)  # leave idle threads behind first
    pool_peak = 0
    pooled = bridge.map(counted, range(8), concurrency=8)

    print(json.dumps({
        "run": [x for x, _ in run_results],
        "loop_threads": sorted({tid for _, tid in run_results}),
        "main": main_native,
        "peak_during_run": peak_during_run,
        "mapped": [x for x, _ in mapped],
        "map_threads": len({tid for _, tid in mapped}),
        "streamed": streamed,
        "imapped": [x for x, _ in imapped],
        "to_thread": bridge.run(via_to_thread()) != main_native,
        "executor": bridge.run(resolve_and_offload()),
        "pooled": pooled,
        "pool_peak": pool_peak,
    }))
    """
)


def test_loop_runs_on_a_real_os_thread_and_waits_cooperatively() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["run"] == list(range(10))
    # One loop thread, and it is not the main thread: a real OS thread, not a greenlet.
    assert len(report["loop_threads"]) == 1
    assert report["loop_threads"][0] != report["main"]
    # All ten greenlets were waiting at once: a blocking wait would have run them in turn.
    assert report["peak_during_run"] == 10
    assert report["mapped"] == [0, 1, 2, 3]
    assert report["map_threads"] == 4  # four real threads for four plain calls at once
    assert report["streamed"] == ["a", "b", "c"]
    assert report["imapped"] == [0, 1, 2, 3, 4]
    assert report["to_thread"] is True
    assert report["executor"] is True  # DNS and asyncio.to_thread did not hang
    assert report["pooled"] == list(range(8))
    assert report["pool_peak"] == 8  # the pool grew past the threads left idle earlier
    assert "Traceback" not in result.stderr, result.stderr


LOGGING_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import logging, sys, time
    import gevent
    import bridge

    class Slow(logging.StreamHandler):
        def emit(self, record):
            time.sleep(0.001)  # holds the handler's lock long enough for others to queue up
            super().emit(record)

    logging.basicConfig(level=logging.INFO, handlers=[Slow(sys.stdout)], format="%(message)s")
    log = logging.getLogger("probe")
    LINES = int(sys.argv[1])

    async def from_loop():  # as the SDKs log "HTTP Request: ..." on the bridge's loop thread
        for i in range(LINES):
            log.info("loop %d", i)

    def from_greenlet(n):
        for i in range(LINES):
            log.info("greenlet %d %d", n, i)
            gevent.sleep(0)

    greenlets = [gevent.spawn(from_greenlet, n) for n in range(4)]
    bridge.run(from_loop())
    done = gevent.joinall(greenlets, timeout=60)
    print("finished", len(done), flush=True)
    """
)


def test_greenlets_and_the_loop_thread_share_logging_handlers() -> None:
    """gevent#2013: a greenlet waiting on a handler lock the loop thread released stayed
    parked for ever; a Celery gevent worker then never finished its warm shutdown."""
    lines = 300
    result = subprocess.run(
        [sys.executable, "-c", LOGGING_SCRIPT, str(lines)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[-1] == "finished 4", result.stdout[-2000:]  # no greenlet was left parked
    assert sum(line.startswith("loop ") for line in out) == lines
    assert sum(line.startswith("greenlet ") for line in out) == 4 * lines
