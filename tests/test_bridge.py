"""The blocking facade: run, gather, map, imap, iterate, syncify and to_thread."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import itertools
import os
import signal
import threading
import traceback
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

import bridge
from bridge import Bridge, BridgeClosedError, BridgeError, ReentrancyError
from bridge._core._iterators import MAX_READ_AHEAD

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def current_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


class TestOneLoopPerProcess:
    def test_loop_is_lazy_and_shared_by_threads(self, b: Bridge) -> None:
        assert "idle" in repr(b)
        loops = []
        threads = [
            threading.Thread(target=lambda: loops.append(b.run(current_loop()))) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(loops) == 8
        assert len({id(loop) for loop in loops}) == 1
        assert "running" in repr(b)

    def test_shared_async_client_never_sees_a_closed_loop(self, b: Bridge, echo_url: str) -> None:
        client = httpx.AsyncClient(base_url=echo_url)
        for i in range(1000):
            response = b.run(client.get(f"/seq/{i}"))
            assert response.json() == {"path": f"/seq/{i}"}

        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                for i in range(10):
                    assert b.run(client.get(f"/t{n}/{i}")).json() == {"path": f"/t{n}/{i}"}
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        b.run(client.aclose())

    # The first loop dies holding the pooled connection: Python warns about it, as it should.
    @pytest.mark.filterwarnings("ignore::ResourceWarning")
    @pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
    def test_asyncio_run_per_call_breaks_the_same_client(self, echo_url: str) -> None:
        """The failure the bridge exists to avoid, shown on the same client and server."""
        client = httpx.AsyncClient(base_url=echo_url)
        asyncio.run(client.get("/first"))
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            asyncio.run(client.get("/second"))
        del client
        gc.collect()  # let the orphaned transport's warning fire inside this test


class TestCaps:
    @pytest.mark.parametrize("k", [1, 4, 7])
    def test_async_calls_reach_but_never_exceed_the_cap(self, b: Bridge, k: int) -> None:
        in_flight = peak = 0
        reached = asyncio.Event()

        async def task(x: int) -> int:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight == k:
                reached.set()
            await asyncio.wait_for(reached.wait(), 30)  # fail, not hang, if k is never reached
            await asyncio.sleep(0)
            in_flight -= 1
            return x

        assert b.map(task, range(30), concurrency=k) == list(range(30))
        assert peak == k

    def test_gather_cap(self, b: Bridge) -> None:
        in_flight = peak = 0
        reached = asyncio.Event()

        async def task() -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight == 3:
                reached.set()
            await asyncio.wait_for(reached.wait(), 30)  # fail, not hang, if k is never reached
            in_flight -= 1

        b.gather(*[task() for _ in range(12)], concurrency=3)
        assert peak == 3

    def test_default_cap_is_the_bridges(self) -> None:
        with Bridge(concurrency=5) as small:
            in_flight = peak = 0
            reached = asyncio.Event()

            async def task(x: int) -> int:
                nonlocal in_flight, peak
                in_flight += 1
                peak = max(peak, in_flight)
                if in_flight == 5:
                    reached.set()
                await asyncio.wait_for(reached.wait(), 30)  # fail, not hang, if k is never reached
                in_flight -= 1
                return x

            small.map(task, range(20))
        assert peak == 5

    @pytest.mark.parametrize("k", [2, 5])
    def test_sync_callables_are_capped_the_same_way(self, b: Bridge, k: int) -> None:
        lock = threading.Lock()
        in_flight = peak = 0
        # A barrier of k parties only opens when exactly k calls wait together: fewer
        # than k in flight breaks it by timeout, more shows up in the peak.
        barrier = threading.Barrier(k, timeout=30)

        def work(x: int) -> int:
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            barrier.wait()
            with lock:
                in_flight -= 1
            return x * 3

        assert b.map(work, range(4 * k), concurrency=k) == [x * 3 for x in range(4 * k)]
        assert peak == k

    def test_imap_cap(self, b: Bridge) -> None:
        in_flight = peak = 0
        reached = asyncio.Event()

        async def task(x: int) -> int:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight == 4:
                reached.set()
            await asyncio.wait_for(reached.wait(), 30)  # fail, not hang, if k is never reached
            in_flight -= 1
            return x

        assert list(b.imap(task, range(40), concurrency=4)) == list(range(40))
        assert peak == 4


class TestCancellation:
    def test_timeout_cancels_and_awaits_cleanup_first(self, b: Bridge) -> None:
        started = threading.Event()
        cleaned = threading.Event()

        async def slow() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0)  # clean-up that itself awaits
                cleaned.set()

        with pytest.raises(TimeoutError, match="cancelled"):
            b.run(slow(), timeout=0.5)
        assert started.is_set()
        assert cleaned.is_set()

    @pytest.mark.parametrize("api", ["gather", "map", "imap"])
    def test_timeout_cancels_every_task_of_the_call(self, b: Bridge, api: str) -> None:
        started: list[int] = []
        cleaned: list[int] = []

        async def slow(i: int) -> None:
            started.append(i)
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0)
                cleaned.append(i)

        with pytest.raises(TimeoutError):
            if api == "gather":
                b.gather(*[slow(i) for i in range(6)], concurrency=3, timeout=0.5)
            elif api == "map":
                b.map(slow, range(6), concurrency=3, timeout=0.5)
            else:
                list(b.imap(slow, range(6), concurrency=3, timeout=0.5))
        # Every one that started was cancelled and cleaned up before the caller saw the
        # error; the cap kept the other three from ever starting.
        assert started
        assert sorted(cleaned) == sorted(started)
        assert set(started) <= {0, 1, 2}
        assert b.run(_other_tasks()) == 0

    def test_keyboard_interrupt_cancels_and_cleans_up(self, b: Bridge) -> None:
        if threading.current_thread() is not threading.main_thread():
            pytest.skip("SIGINT is delivered to the main thread only")
        started = threading.Event()
        cleaned = threading.Event()

        async def slow() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0)
                cleaned.set()

        def interrupt() -> None:
            started.wait(10)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

        threading.Thread(target=interrupt).start()
        with pytest.raises(KeyboardInterrupt):
            b.run(slow())
        assert cleaned.is_set()
        assert b.run(_other_tasks()) == 0

    def test_first_failure_cancels_the_rest(self, b: Bridge) -> None:
        started = 0
        all_started = asyncio.Event()
        cancelled: list[int] = []

        async def item(i: int) -> int:
            nonlocal started
            started += 1
            if started == 4:
                all_started.set()
            if i == 2:
                await all_started.wait()
                raise ValueError("item 2 failed")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(i)
                raise
            return i

        with pytest.raises(ValueError, match="item 2 failed"):
            b.map(item, range(4), concurrency=4)
        assert sorted(cancelled) == [0, 1, 3]

    def test_return_exceptions_keeps_everything_in_place(self, b: Bridge) -> None:
        async def item(i: int) -> int:
            await asyncio.sleep(0)
            if i % 3 == 0:
                raise KeyError(i)
            return i

        results = b.gather(*[item(i) for i in range(7)], return_exceptions=True)
        assert [type(r).__name__ if isinstance(r, BaseException) else r for r in results] == [
            "KeyError", 1, 2, "KeyError", 4, 5, "KeyError",
        ]  # fmt: skip
        mapped = b.map(item, range(4), return_exceptions=True)
        assert isinstance(mapped[0], KeyError)
        assert mapped[1:3] == [1, 2]

    def test_imap_close_cancels_in_flight(self, b: Bridge) -> None:
        started: set[int] = set()
        cancelled: list[int] = []

        async def item(i: int) -> int:
            started.add(i)
            if i == 0:
                return 0
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(i)
                raise
            return i

        results = b.imap(item, range(100), concurrency=3, ordered=False)
        assert next(results) == 0
        results.close()
        # The window held 0, 1, 2 and refilled 3 when 0 was taken; nothing else was pulled.
        assert started <= {0, 1, 2, 3}
        assert sorted(cancelled) == sorted(started - {0})
        assert list(results) == []


async def _other_tasks() -> int:
    return len(asyncio.all_tasks()) - 1


class TestExceptions:
    def test_original_type_message_and_frames(self, b: Bridge) -> None:
        async def inner_failure() -> None:
            await asyncio.sleep(0)
            raise KeyError("missing thing")

        with pytest.raises(KeyError, match="missing thing") as info:
            b.run(inner_failure())
        frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
        assert "inner_failure" in frames

    def test_sync_callable_failure_keeps_its_frames(self, b: Bridge) -> None:
        def sync_failure(x: int) -> int:
            raise ZeroDivisionError(f"no {x}")

        with pytest.raises(ZeroDivisionError, match="no 1") as info:
            b.map(sync_failure, [1])
        assert "sync_failure" in [f.name for f in traceback.extract_tb(info.value.__traceback__)]

    def test_hierarchy(self) -> None:
        assert issubclass(ReentrancyError, BridgeError)
        assert issubclass(ReentrancyError, RuntimeError)
        assert issubclass(BridgeClosedError, BridgeError)
        assert issubclass(BridgeClosedError, RuntimeError)


class TestContextVars:
    def test_visible_in_coroutines_threads_and_to_thread(self, b: Bridge) -> None:
        request_id.set("req-42")

        async def read() -> str:
            return request_id.get()

        def read_sync(_: int) -> str:
            return request_id.get()

        async def via_to_thread() -> str:
            return await b.to_thread(request_id.get)

        assert b.run(read()) == "req-42"
        assert b.gather(read(), read()) == ["req-42", "req-42"]
        assert b.map(read_sync, range(3)) == ["req-42"] * 3
        assert list(b.imap(read_sync, range(3))) == ["req-42"] * 3
        assert b.run(via_to_thread()) == "req-42"

    def test_changes_inside_do_not_leak_back(self, b: Bridge) -> None:
        request_id.set("outer")

        async def change() -> None:
            request_id.set("inner")

        b.run(change())
        assert request_id.get() == "outer"


class TestReentrancy:
    def test_blocking_call_from_the_loop_thread_raises(self, b: Bridge) -> None:
        async def nested() -> int:
            return b.run(double(1))

        with pytest.raises(ReentrancyError, match="await"):
            b.run(nested())

    def test_from_a_thread_running_its_own_loop(self, b: Bridge) -> None:
        async def handler() -> int:  # like a FastAPI handler or a Jupyter cell
            return b.run(double(21)) + b.map(double, [1])[0]

        assert asyncio.run(handler()) == 44

    def test_from_a_pool_thread(self, b: Bridge) -> None:
        def sync_step(x: int) -> int:
            return b.run(double(x))

        assert b.map(sync_step, range(5)) == [0, 2, 4, 6, 8]

    def test_nested_plain_map_from_a_pool_thread_raises_instead_of_starving(self) -> None:
        with Bridge(threads=2) as small:

            def outer(x: int) -> list[int]:
                return small.map(lambda y: y + x, range(3))

            with pytest.raises(ReentrancyError, match="starve the pool"):
                small.map(outer, range(2))


class Endless:
    """An endless input that counts the items pulled from it."""

    def __init__(self) -> None:
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        for i in itertools.count():
            self.pulled += 1
            yield i


class TestIMapMemory:
    def test_input_is_pulled_lazily_and_bounded(self, b: Bridge) -> None:
        endless = Endless()
        results = b.imap(double, endless, concurrency=8)
        first = list(itertools.islice(results, 1000))
        results.close()
        assert first == [2 * i for i in range(1000)]
        # At most `concurrency` running plus `concurrency` finished-but-not-yet-taken.
        assert endless.pulled <= 1000 + 2 * 8

    def test_absurd_concurrency_still_bounds_read_ahead(self, b: Bridge) -> None:
        endless = Endless()
        results = b.imap(double, endless, concurrency=10**9)
        assert next(results) == 0
        results.close()
        # Pulled by the time the first result came back: the fixed cap (plus the item that
        # took the first result's place), not a billion.
        assert endless.pulled <= MAX_READ_AHEAD + 1


class TestIterate:
    def test_streams_items(self, b: Bridge) -> None:
        async def tokens() -> AsyncIterator[str]:
            for word in ["a", "b", "c"]:
                await asyncio.sleep(0)
                yield word

        assert list(b.iterate(tokens())) == ["a", "b", "c"]

    @pytest.mark.parametrize("how", ["break", "exception", "close", "gc"])
    def test_leaving_early_runs_aclose(self, b: Bridge, how: str) -> None:
        closed = threading.Event()

        async def tokens() -> AsyncIterator[int]:
            try:
                for i in range(1000):
                    await asyncio.sleep(0)
                    yield i
            finally:
                await asyncio.sleep(0)
                closed.set()

        if how == "break":
            for i in b.iterate(tokens()):
                if i == 2:
                    break
        elif how == "exception":
            with pytest.raises(LookupError):
                for _ in b.iterate(tokens()):
                    raise LookupError
        elif how == "close":
            it = b.iterate(tokens())
            next(it)
            it.close()
            assert closed.is_set()  # close() waits for aclose()
        else:
            it = b.iterate(tokens())
            next(it)
            del it
        assert closed.wait(10)

    def test_timeout_bounds_each_item(self, b: Bridge) -> None:
        closed = threading.Event()

        async def stalls() -> AsyncIterator[int]:
            try:
                yield 1
                await asyncio.Event().wait()
                yield 2
            finally:
                closed.set()

        it = b.iterate(stalls(), timeout=0.5)
        assert next(it) == 1
        with pytest.raises(TimeoutError):
            next(it)
        assert closed.is_set()
        assert list(it) == []

    def test_error_inside_the_generator_arrives_as_itself(self, b: Bridge) -> None:
        async def broken() -> AsyncIterator[int]:
            yield 1
            raise ConnectionResetError("upstream went away")

        it = b.iterate(broken())
        assert next(it) == 1
        with pytest.raises(ConnectionResetError, match="upstream went away"):
            next(it)


class TestSyncifyAndToThread:
    def test_syncify_bare_and_with_options(self) -> None:
        @bridge.syncify
        async def add(a: int, b: int = 1) -> int:
            await asyncio.sleep(0)
            return a + b

        @bridge.syncify(timeout=0.05)
        async def hang() -> None:
            await asyncio.Event().wait()

        assert add(1, b=2) == 3
        assert add.__name__ == "add"
        with pytest.raises(TimeoutError):
            hang()

    def test_instance_syncify(self, b: Bridge) -> None:
        blocking_double = b.syncify(double)
        assert blocking_double(4) == 8

    def test_to_thread_runs_off_the_loop(self, b: Bridge) -> None:
        async def main() -> tuple[int, int]:
            loop_thread = threading.get_ident()
            worker = await b.to_thread(threading.get_ident)
            return loop_thread, worker

        loop_thread, worker = b.run(main())
        assert loop_thread != worker

    def test_to_thread_is_bounded_by_threads(self) -> None:
        with Bridge(threads=2) as small:
            lock = threading.Lock()
            in_flight = peak = 0
            barrier = threading.Barrier(2, timeout=30)

            def blocking() -> None:
                nonlocal in_flight, peak
                with lock:
                    in_flight += 1
                    peak = max(peak, in_flight)
                barrier.wait()
                with lock:
                    in_flight -= 1

            async def main() -> None:
                await asyncio.gather(*[small.to_thread(blocking) for _ in range(6)])

            small.run(main())
        assert peak == 2

    def test_to_thread_from_a_foreign_loop(self) -> None:
        async def main() -> str:
            return await bridge.to_thread(lambda: "done")

        assert asyncio.run(main()) == "done"


class TestBadInput:
    def test_non_awaitable(self, b: Bridge) -> None:
        with pytest.raises(TypeError, match=r"expects an awaitable.*int"):
            b.run(42)  # type: ignore[arg-type]

    def test_uncalled_coroutine_function(self, b: Bridge) -> None:
        with pytest.raises(TypeError, match=r"call it first"):
            b.run(double)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"call it first"):
            b.gather(double(1), double)  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", [0, -3])
    def test_concurrency_below_one(self, b: Bridge, bad: int) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            b.map(double, [1], concurrency=bad)
        with pytest.raises(ValueError, match="at least 1"):
            Bridge(concurrency=bad)

    def test_bad_timeout_and_threads(self, b: Bridge) -> None:
        with pytest.raises(ValueError, match="more than 0"):
            b.run(double(1), timeout=-1)
        with pytest.raises(ValueError, match="threads"):
            Bridge(threads=0)

    def test_iterate_wants_an_async_iterable(self, b: Bridge) -> None:
        with pytest.raises(TypeError, match="plain for loop"):
            b.iterate([1, 2])  # type: ignore[arg-type]

    def test_syncify_wants_async(self) -> None:
        with pytest.raises(TypeError, match="synchronous already"):
            bridge.syncify(len)  # type: ignore[arg-type]

    def test_gather_on_a_closed_bridge_leaves_nothing_unawaited(self) -> None:
        closed = Bridge()
        closed.close()
        # filterwarnings=error turns a "never awaited" RuntimeWarning into a failure here.
        with pytest.raises(BridgeClosedError):
            closed.gather(double(1), double(2))
        gc.collect()

    def test_use_after_close(self) -> None:
        closed = Bridge()
        closed.run(double(1))
        closed.close()
        closed.close()  # harmless
        coro = double(1)
        with pytest.raises(BridgeClosedError, match="closed"):
            closed.run(coro)
        assert "closed" in repr(closed)


class TestManyCallers:
    def test_64_threads_by_200_calls_leave_nothing_behind(self, b: Bridge) -> None:
        b.run(double(0))
        b.map(lambda x: x, range(b.threads))  # start every pool thread before the baseline
        threads_before = threading.active_count()
        fds_before = len(os.listdir("/proc/self/fd"))
        wrong: list[tuple[int, int]] = []

        def caller(n: int) -> None:
            for i in range(200):
                got = b.run(double(n * 1000 + i))
                if got != 2 * (n * 1000 + i):
                    wrong.append((n, i))

        callers = [threading.Thread(target=caller, args=(n,)) for n in range(64)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join()
        assert wrong == []
        assert threading.active_count() == threads_before
        assert b.run(_other_tasks()) == 0
        assert len(os.listdir("/proc/self/fd")) == fds_before


class TestDefault:
    def test_get_and_set_default(self) -> None:
        original = bridge.get_default()
        assert bridge.get_default() is original
        replacement = Bridge(concurrency=3)
        try:
            assert bridge.set_default(replacement) is original
            assert bridge.get_default() is replacement
            assert bridge.run(double(5)) == 10
        finally:
            bridge.set_default(original)
            replacement.close()
        with pytest.raises(TypeError, match=r"bridge\.Bridge"):
            bridge.set_default("nope")  # type: ignore[arg-type]


class TestTimeoutValues:
    """NaN, infinities and other odd seconds, refused or understood at the call."""

    @pytest.mark.parametrize("where", ["run", "gather", "map", "imap", "iterate", "syncify"])
    def test_nan_timeout_is_refused_at_the_call(self, b: Bridge, where: str) -> None:
        nan = float("nan")
        with pytest.raises(ValueError, match="timeout is NaN"):
            _call_with_timeout(b, where, nan)

    @pytest.mark.parametrize("where", ["run", "gather", "map", "imap", "iterate", "syncify"])
    def test_infinite_timeout_means_no_limit(self, b: Bridge, where: str) -> None:
        assert _call_with_timeout(b, where, float("inf")) == [2]

    @pytest.mark.parametrize("bad", [-float("inf"), -1, 0])
    def test_negative_or_zero_timeout_is_refused(self, b: Bridge, bad: float) -> None:
        with pytest.raises(ValueError, match="more than 0"):
            b.imap(double, [1], timeout=bad)

    @pytest.mark.parametrize(
        "bad", [float("nan"), float("inf"), -1.0, 0, pytest.param(10**400, id="10**400")]
    )
    def test_cancel_timeout_must_be_finite_and_positive(self, bad: float) -> None:
        with pytest.raises(ValueError, match="cancel_timeout"):
            Bridge(cancel_timeout=bad)

    def test_cancel_timeout_none_is_the_default(self) -> None:
        with Bridge(cancel_timeout=None) as default:  # type: ignore[arg-type]
            assert default.cancel_timeout == bridge.DEFAULT_CANCEL_TIMEOUT

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -2.0])
    def test_close_with_a_bad_timeout_refuses_and_leaves_the_bridge_open(self, bad: float) -> None:
        opened = Bridge()
        try:
            assert opened.run(double(1)) == 2
            with pytest.raises(ValueError, match=r"close\(timeout=\)"):
                opened.close(timeout=bad)
            assert not opened.closed
            assert opened.run(double(2)) == 4  # still usable: nothing was half-closed
        finally:
            opened.close()
        assert opened.closed

    def test_timeout_of_the_wrong_type(self, b: Bridge) -> None:
        with pytest.raises(TypeError, match="number of seconds"):
            b.map(double, [1], timeout="5")  # type: ignore[arg-type]


def _call_with_timeout(b: Bridge, where: str, timeout: float) -> list[int]:
    if where == "run":
        return [b.run(double(1), timeout=timeout)]
    if where == "gather":
        return b.gather(double(1), timeout=timeout)
    if where == "map":
        return b.map(double, [1], timeout=timeout)
    if where == "imap":
        return list(b.imap(double, [1], timeout=timeout))
    if where == "iterate":

        async def one() -> AsyncIterator[int]:
            yield 2

        return list(b.iterate(one(), timeout=timeout))
    return [b.syncify(double, timeout=timeout)(1)]


class TestClosedBridge:
    def test_to_thread_on_a_closed_bridge_raises_and_runs_nothing(self) -> None:
        closed = Bridge(name="closed-to-thread")
        ran: list[int] = []

        async def hand_off() -> None:
            await closed.to_thread(ran.append, 1)

        closed.run(hand_off())  # starts the pool
        closed.close()
        workers = _pool_threads("closed-to-thread")
        with pytest.raises(BridgeClosedError, match="closed"):
            asyncio.run(hand_off())
        assert ran == [1]  # only the call made before close()
        assert _pool_threads("closed-to-thread") <= workers  # no new thread, waiting for ever

    def test_to_thread_on_a_bridge_closed_before_first_use(self) -> None:
        never_used = Bridge()
        never_used.close()
        with pytest.raises(BridgeClosedError):
            asyncio.run(never_used.to_thread(len, "abc"))


def _pool_threads(name: str) -> int:
    return sum(t.name.startswith(f"{name}-worker") for t in threading.enumerate())
