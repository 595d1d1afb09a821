"""Fork safety and clean shutdown, each shown in a real child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from bridge import Bridge, BridgeClosedError


async def loop_id() -> int:
    return id(asyncio.get_running_loop())


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def _in_child(b: Bridge, parent_loop: int, write_fd: int) -> None:
    """Runs in the forked child; reports through a pipe and never returns."""
    signal.alarm(20)  # a hung child dies, so the parent's read ends instead of hanging
    try:
        child_loop = b.run(loop_id())
        verdict = "fresh" if child_loop != parent_loop else "inherited"
        os.write(write_fd, f"{verdict} {b.run(double(21))} {b.map(double, [1, 2])}".encode())
    except BaseException as exc:
        os.write(write_fd, f"error {exc!r}".encode())
    finally:
        os._exit(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() exists on POSIX only")
# Python 3.12+ warns that forking a threaded process may deadlock; the bridge is built
# for exactly that case (gunicorn --preload, Celery prefork), so the warning is expected.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_gets_a_fresh_loop_and_parent_is_unaffected(b: Bridge) -> None:
    parent_loop = b.run(loop_id())
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        _in_child(b, parent_loop, write_fd)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report == "fresh 42 [2, 4]"
    assert b.run(loop_id()) == parent_loop
    assert b.run(double(5)) == 10


SHUTDOWN_SCRIPT = textwrap.dedent(
    """
    import asyncio, threading
    import bridge

    started = threading.Event()

    async def forever():
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)
            print("task cleaned up", flush=True)

    async def tokens():
        try:
            for i in range(100):
                yield i
        finally:
            print("generator closed", flush=True)

    def caller():
        try:
            bridge.run(forever())
        except bridge.BridgeClosedError:
            pass  # whether a daemon thread runs again before exit is up to the interpreter

    stream = bridge.iterate(tokens())
    print("first token", next(stream), flush=True)
    threading.Thread(target=caller, daemon=True).start()
    started.wait()
    print("exiting", flush=True)
    """
)


def test_interpreter_exit_closes_the_default_bridge_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", SHUTDOWN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "first token 0" in result.stdout
    assert "task cleaned up" in result.stdout
    assert "generator closed" in result.stdout
    for bad in ("Task was destroyed", "Event loop is closed", "unclosed", "Traceback"):
        assert bad not in result.stderr, result.stderr


def test_close_stops_the_loop_thread_and_refuses_new_work() -> None:
    import threading

    b = Bridge(name="closing-bridge")
    assert b.run(double(1)) == 2
    names = {t.name for t in threading.enumerate()}
    assert "closing-bridge-loop" in names
    b.close(timeout=5)
    assert b.closed
    assert "closing-bridge-loop" not in {t.name for t in threading.enumerate()}
    with pytest.raises(BridgeClosedError, match="Bridge"):
        b.map(double, [1])


def test_a_waiting_caller_gets_a_clear_error_when_the_bridge_closes() -> None:
    import threading

    b = Bridge()
    started = threading.Event()
    seen: list[BaseException] = []

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    def caller() -> None:
        try:
            b.run(forever())
        except BaseException as exc:
            seen.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    assert started.wait(10)
    b.close()
    thread.join(10)
    assert len(seen) == 1
    assert isinstance(seen[0], BridgeClosedError)
    assert "closed while this call was running" in str(seen[0])


def test_calls_made_while_closing_are_refused_not_left_pending() -> None:
    import threading

    b = Bridge(cancel_timeout=5)
    cancelling = threading.Event()
    proceed = threading.Event()

    running = threading.Event()

    async def slow_to_cancel() -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelling.set()
            # close() is now waiting on this clean-up; the go-ahead comes from another thread.
            while not proceed.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            raise

    caller = threading.Thread(target=lambda: _swallow(b, slow_to_cancel()))
    caller.start()
    assert running.wait(10)
    closer = threading.Thread(target=b.close)
    closer.start()
    assert cancelling.wait(10)
    late = double(1)
    with pytest.raises(BridgeClosedError):
        b.run(late)
    proceed.set()
    closer.join(10)
    caller.join(10)
    assert not closer.is_alive()
    assert not caller.is_alive()


def _swallow(b: Bridge, coro: object) -> None:
    with contextlib.suppress(BridgeClosedError):
        b.run(coro)  # type: ignore[call-overload]


EXIT_WITH_BUSY_POOL = textwrap.dedent(
    """
    import threading, time
    import bridge

    bridge.set_default(bridge.Bridge(cancel_timeout=1))
    started = threading.Event()

    def slow(_):
        started.set()
        time.sleep(60)

    def caller():
        try:
            bridge.map(slow, [1])
        except bridge.BridgeClosedError:
            print("caller saw the bridge close", flush=True)

    threading.Thread(target=caller, daemon=True).start()
    started.wait()
    print("exiting", flush=True)
    """
)


def test_exit_does_not_wait_for_a_running_pool_job_beyond_cancel_timeout() -> None:
    # A 60 s job and a 1 s cancel_timeout: exit must not wait for the job. The 30 s limit
    # below only turns a hang into a failure; it is not a performance claim.
    result = subprocess.run(
        [sys.executable, "-c", EXIT_WITH_BUSY_POOL],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "exiting" in result.stdout
    assert "Traceback" not in result.stderr, result.stderr
