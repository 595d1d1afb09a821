"""Bridge(thread_sensitive=True): a call's sync_to_async work runs on the waiting caller."""

from __future__ import annotations

import asyncio
import contextvars
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from bridge import Bridge

asgiref_sync = pytest.importorskip("asgiref.sync")
sync_to_async = asgiref_sync.sync_to_async

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


@pytest.fixture
def sb() -> Iterator[Bridge]:
    with Bridge(name="sensitive-bridge", thread_sensitive=True) as instance:
        yield instance


def ident() -> int:
    return threading.get_ident()


async def sensitive_ident() -> int:
    return int(await sync_to_async(ident)())


class TestCallerThread:
    def test_sync_to_async_runs_on_the_calling_thread(self, sb: Bridge) -> None:
        assert sb.thread_sensitive
        assert sb.run(sensitive_ident()) == threading.get_ident()

    def test_not_thread_sensitive_calls_still_go_elsewhere(self, sb: Bridge) -> None:
        async def elsewhere() -> int:
            return int(await sync_to_async(ident, thread_sensitive=False)())

        assert sb.run(elsewhere()) != threading.get_ident()

    def test_off_by_default(self, b: Bridge) -> None:
        assert not b.thread_sensitive
        assert b.run(sensitive_ident()) != threading.get_ident()

    def test_gather_map_and_iterate(self, sb: Bridge) -> None:
        me = threading.get_ident()
        assert sb.gather(*(sensitive_ident() for _ in range(5))) == [me] * 5

        async def item(_: int) -> int:
            return await sensitive_ident()

        assert sb.map(item, range(5)) == [me] * 5

        async def stream() -> AsyncIterator[int]:
            for _ in range(3):
                yield await sensitive_ident()

        assert list(sb.iterate(stream())) == [me] * 3

    def test_each_calling_thread_gets_its_own_work_back(self, sb: Bridge) -> None:
        seen: dict[int, tuple[int, list[int]]] = {}
        # All alive at once, so no two share an ident (idents of finished threads are reused).
        together = threading.Barrier(8)

        def caller(index: int) -> None:
            together.wait()
            seen[index] = (ident(), sb.gather(*(sensitive_ident() for _ in range(10))))
            together.wait()

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(seen) == 8
        assert len({caller_id for caller_id, _ in seen.values()}) == 8
        for caller_id, idents in seen.values():
            assert idents == [caller_id] * 10

    def test_caller_contextvars_reach_the_sync_function(self, sb: Bridge) -> None:
        def read() -> str:
            return request_id.get()

        async def co() -> str:
            return str(await sync_to_async(read)())

        token = request_id.set("req-42")
        try:
            assert sb.run(co()) == "req-42"
        finally:
            request_id.reset(token)

    def test_asgiref_local_set_by_the_caller_is_visible(self, sb: Bridge) -> None:
        from asgiref.local import Local

        local = Local()
        local.language = "fr"

        async def co() -> str:
            return str(local.language)

        assert sb.run(co()) == "fr"

    def test_nested_bridged_call_inside_a_sensitive_function(self, sb: Bridge) -> None:
        def inner() -> int:
            return sb.run(sensitive_ident())

        async def outer() -> int:
            return int(await sync_to_async(inner)())

        assert sb.run(outer()) == threading.get_ident()


class TestSemantics:
    def test_results_and_exceptions_are_unchanged(self, sb: Bridge) -> None:
        def fail() -> None:
            raise KeyError("from the caller's thread")

        async def co() -> None:
            await sync_to_async(fail)()

        with pytest.raises(KeyError, match="from the caller's thread"):
            sb.run(co())
        assert sb.run(asyncio.sleep(0, result="ok")) == "ok"

    def test_timeout_cancels_and_clean_up_still_reaches_the_caller(self, sb: Bridge) -> None:
        cleaned_on: list[int] = []

        async def slow() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                cleaned_on.append(await sensitive_ident())

        with pytest.raises(TimeoutError):
            sb.run(slow(), timeout=0.2)
        assert cleaned_on == [threading.get_ident()]

    def test_keyboard_interrupt_cancels_and_cleans_up(self, sb: Bridge) -> None:
        if threading.current_thread() is not threading.main_thread():
            pytest.skip("SIGINT is delivered to the main thread only")
        started = threading.Event()
        cleaned_on: list[int] = []

        async def slow() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                cleaned_on.append(await sensitive_ident())

        def interrupt() -> None:
            started.wait(10)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        threading.Thread(target=interrupt).start()
        with pytest.raises(KeyboardInterrupt):
            sb.run(slow())
        assert cleaned_on == [threading.get_ident()]

    def test_work_submitted_after_the_call_fails_instead_of_hanging(self, sb: Bridge) -> None:
        release = asyncio.Event()
        outcome: list[BaseException] = []
        tasks: set[asyncio.Task[None]] = set()

        async def late() -> None:
            await release.wait()
            try:
                await sync_to_async(ident)()
            except RuntimeError as exc:
                outcome.append(exc)

        async def leave_a_task_behind() -> None:
            task = asyncio.get_running_loop().create_task(late())
            tasks.add(task)

        sb.run(leave_a_task_behind())

        async def finish() -> None:
            release.set()
            await asyncio.gather(*tasks)

        sb.run(finish())
        assert len(outcome) == 1
        assert "CurrentThreadExecutor" in str(outcome[0])

    def test_imap_keeps_the_plain_path(self, sb: Bridge) -> None:
        async def item(_: int) -> int:
            return await sensitive_ident()

        results = list(sb.imap(item, range(3)))
        assert len(results) == 3
        assert threading.get_ident() not in results


def test_a_plain_bridge_does_not_import_asgiref() -> None:
    probe = (
        "import sys, bridge; b = bridge.Bridge(); b.run(__import__('asyncio').sleep(0)); "
        "b.close(); print('asgiref' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
