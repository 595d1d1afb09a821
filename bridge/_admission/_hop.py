"""Requests from other event loops, sent on the bridge's.

A bridge client's connections live on a bridge's event loop. A request made on any other
running loop (uvicorn's, ``asyncio.run``'s, pydantic-ai's ``run_sync``, Jupyter's) hops
there: :func:`call_on` starts the coroutine that admits and sends it as a task on the
bridge's loop and waits for its outcome on the caller's loop, and a streamed body comes
back the same way, one chunk per hop (:class:`HopStream`). Nothing is read ahead, so a
slow reader holds the stream back instead of filling memory.

- Cancelling the caller cancels the task on the bridge's loop, and waits (a bounded
  time) until it has unwound: its connection and admission slot are free when the
  caller's ``CancelledError`` goes on.
- An outcome that arrives after its caller gave up (cancelled, or its loop closed) is
  disposed of on the bridge's side (``orphan``): a stream is closed, not left open.
- When the bridge closes, hops that have not finished fail with ``ForeignLoopError``
  instead of waiting for ever, and open hop streams are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Generic, TypeVar

import httpx2

from .. import _process
from .._core._compat import create_task
from .._core._default import default_loop
from .._errors import BridgeClosedError, ForeignLoopError

__all__ = ["HopStream", "bridge_loop", "call_on"]

T = TypeVar("T")

#: Seconds a cancelled caller waits for its hop to unwind on the bridge's loop.
UNWIND_TIMEOUT = 5.0

_CLOSED_MESSAGE = (
    "this request came from an event loop that is not a bridge's, so it runs on the default "
    "bridge's loop, and that bridge is closed; make a new default with "
    "bridge.set_default(bridge.Bridge()), or give the client a transport of its own "
    "(transport=httpx2.AsyncHTTPTransport()) to send on your loop"
)


def bridge_loop() -> asyncio.AbstractEventLoop:
    """The loop that requests from other loops run on: the process default bridge's.

    Raises:
        ForeignLoopError: the default bridge is closed.
    """
    try:
        return default_loop()
    except BridgeClosedError as exc:
        raise ForeignLoopError(_CLOSED_MESSAGE) from exc


class _Hop(Generic[T]):
    """One coroutine run on the bridge's loop for a caller waiting on another loop."""

    __slots__ = (
        "abandoned",
        "caller",
        "coro",
        "delivered",
        "error",
        "orphan",
        "posted",
        "result",
        "running",
        "settled",
        "task",
        "waiter",
    )

    def __init__(
        self,
        caller: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, T],
        orphan: Callable[[T], None] | None,
    ) -> None:
        self.caller = caller
        self.coro = coro
        self.waiter: asyncio.Future[T] = caller.create_future()
        self.orphan = orphan
        self.task: asyncio.Task[None] | None = None
        self.result: T | None = None
        self.error: BaseException | None = None
        self.running = False
        self.posted = False
        self.abandoned = False  # set on the caller's loop, read on the bridge's
        self.delivered = False
        self.settled: asyncio.Future[None] | None = None

    # -- on the bridge's loop ------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, context: contextvars.Context) -> None:
        if self.abandoned or _closing(loop):
            self.coro.close()
            self._post(loop, ForeignLoopError(_CLOSED_MESSAGE))
            return
        self.task = create_task(loop, self._drive(loop), context)

    async def _drive(self, loop: asyncio.AbstractEventLoop) -> None:
        # The outcome goes back from the task's last step rather than a done-callback: the
        # caller wakes one loop iteration sooner (as in _calls.Call._drive).
        self.running = True
        try:
            result = await self.coro
        except asyncio.CancelledError:
            # By its caller (which no longer waits), or by the bridge closing.
            self._post(loop, ForeignLoopError(_CLOSED_MESSAGE))
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
            self._post(loop, exc)
        else:
            self.result = result
            self._post(loop, None)

    def cancel(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if not self.running:  # not started, or cancelled before its first step: no _drive
            self.coro.close()
            self._post(loop, ForeignLoopError(_CLOSED_MESSAGE))

    def _post(self, loop: asyncio.AbstractEventLoop, error: BaseException | None) -> None:
        if self.posted:
            return
        self.posted = True
        self.error = error
        _forget(loop, self)
        try:
            self.caller.call_soon_threadsafe(self.deliver)
        except RuntimeError:  # the caller's loop has closed: nobody will take the outcome
            self._dispose()

    # -- on the caller's loop --------------------------------------------------------------

    def deliver(self) -> None:
        self.delivered = True
        if self.waiter.done():  # the caller gave up meanwhile
            self._dispose()
        elif self.error is not None:
            self.waiter.set_exception(self.error)
        else:
            self.waiter.set_result(self.result)  # type: ignore[arg-type]  # set with no error
        self.error = self.result = None  # no cycles through this hop, nothing kept alive
        if self.settled is not None and not self.settled.done():
            self.settled.set_result(None)

    def _dispose(self) -> None:
        if self.error is None and self.orphan is not None:
            self.orphan(self.result)  # type: ignore[arg-type]  # set with no error

    async def abandon(self, loop: asyncio.AbstractEventLoop) -> None:
        """The caller was cancelled: cancel the task and wait until it has unwound."""
        if self.delivered:
            waiter = self.waiter
            if not waiter.cancelled() and waiter.exception() is None and self.orphan:
                self.orphan(waiter.result())  # delivered, then cancelled before it was seen
            return
        self.abandoned = True
        self.settled = self.caller.create_future()
        try:
            loop.call_soon_threadsafe(self.cancel, loop)
        except RuntimeError:  # the bridge's loop is gone, and its tasks with it
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.settled, UNWIND_TIMEOUT)


async def call_on(
    loop: asyncio.AbstractEventLoop,
    fn: Callable[..., Coroutine[Any, Any, T]],
    *args: Any,
    orphan: Callable[[T], None] | None = None,
) -> T:
    """Await ``fn(*args)`` as a task on ``loop`` (a bridge's) from the running loop.

    The task runs in a copy of the caller's context. ``orphan`` is called with a result
    that its caller no longer wants (it was cancelled, or its loop closed), from whichever
    thread finds out.

    Raises:
        ForeignLoopError: the bridge is closed, or closed while the task ran.
    """
    hop: _Hop[T] = _Hop(asyncio.get_running_loop(), fn(*args), orphan)
    try:
        _enter(loop, hop)
        context = contextvars.copy_context()
        loop.call_soon_threadsafe(hop.start, loop, context, context=context)
    except (RuntimeError, ForeignLoopError) as exc:  # closed (between the check and now)
        hop.coro.close()
        _forget(loop, hop)
        raise ForeignLoopError(_CLOSED_MESSAGE) from exc
    try:
        return await hop.waiter
    except asyncio.CancelledError:
        await hop.abandon(loop)
        raise


# -- streamed bodies -------------------------------------------------------------------------


class _StreamState:
    """What a hop stream shares with its finalizer: the stream, read and closed on its loop."""

    __slots__ = ("__weakref__", "closed", "inner", "iterator", "loop")

    def __init__(self, inner: httpx2.AsyncByteStream, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.loop = loop
        self.iterator: AsyncIterator[bytes] | None = None
        self.closed = False

    async def next_chunk(self) -> bytes | None:
        """The next chunk, or None at the end (a future cannot carry StopAsyncIteration)."""
        if self.iterator is None:
            self.iterator = self.inner.__aiter__()
        try:
            return await self.iterator.__anext__()
        except StopAsyncIteration:
            await self.close()
            return None
        except BaseException:
            await self.close()  # the stream cannot go on: free its connection and slot now
            raise

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            _streams_of(self.loop).discard(self)
            await self.inner.aclose()

    def close_soon(self) -> None:
        """Close from any thread, without waiting (the stream was dropped unclosed)."""
        if self.closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed, and the stream with it
            self.loop.call_soon_threadsafe(_start_close, self)


def _start_close(state: _StreamState) -> None:
    if not state.closed:
        state.loop.create_task(state.close())


class HopStream(httpx2.AsyncByteStream):
    """A response body whose connection lives on a bridge's loop, read from another loop.

    Each chunk is one hop. ``aclose`` hops too, unless the stream already ended there. A
    hop stream dropped without being closed is closed on its loop when collected.
    """

    def __init__(self, inner: httpx2.AsyncByteStream, loop: asyncio.AbstractEventLoop) -> None:
        self._state = state = _StreamState(inner, loop)
        _streams_of(loop).add(state)
        # Not at exit: closing the bridge closes every open hop stream (_close_for_loop).
        weakref.finalize(self, state.close_soon).atexit = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        state = self._state
        if asyncio.get_running_loop() is state.loop:  # closing an orphan, on its own loop
            while (chunk := await state.next_chunk()) is not None:
                yield chunk
            return
        while (chunk := await call_on(state.loop, state.next_chunk)) is not None:
            yield chunk

    async def aclose(self) -> None:
        state = self._state
        if state.closed:
            return
        if asyncio.get_running_loop() is state.loop:
            await state.close()
            return
        with contextlib.suppress(ForeignLoopError):  # a closed bridge closed it already
            await call_on(state.loop, state.close)

    def close_soon(self) -> None:
        """Close on the bridge's loop, from any thread, without waiting."""
        self._state.close_soon()


# -- bookkeeping per bridge loop, so that closing the bridge leaves no caller waiting ---------

_lock = threading.Lock()
_hops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[_Hop[Any]]] = (
    weakref.WeakKeyDictionary()
)
_open_streams: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakSet[_StreamState]
] = weakref.WeakKeyDictionary()
_closed: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _enter(loop: asyncio.AbstractEventLoop, hop: _Hop[Any]) -> None:
    with _lock:
        if loop in _closed:
            raise ForeignLoopError(_CLOSED_MESSAGE)
        hops = _hops.get(loop)
        if hops is None:
            hops = _hops[loop] = set()
        hops.add(hop)


def _forget(loop: asyncio.AbstractEventLoop, hop: _Hop[Any]) -> None:
    with _lock:
        hops = _hops.get(loop)
        if hops is not None:
            hops.discard(hop)


def _closing(loop: asyncio.AbstractEventLoop) -> bool:
    with _lock:
        return loop in _closed


def _streams_of(loop: asyncio.AbstractEventLoop) -> weakref.WeakSet[_StreamState]:
    with _lock:
        streams = _open_streams.get(loop)
        if streams is None:
            streams = _open_streams[loop] = weakref.WeakSet()
        return streams


async def _close_for_loop(loop: asyncio.AbstractEventLoop) -> None:
    """At bridge close: refuse new hops, fail the waiting ones, close open hop streams."""
    with _lock:
        _closed.add(loop)
        hops = _hops.pop(loop, set())
        streams = list(_open_streams.pop(loop, ()))
    for hop in hops:
        hop.cancel(loop)
    tasks = [hop.task for hop in hops if hop.task is not None and not hop.task.done()]
    if tasks:
        await asyncio.wait(tasks)
    for state in streams:
        with contextlib.suppress(Exception):
            await state.close()


def _after_fork_in_child() -> None:
    global _lock  # noqa: PLW0603 - the parent's lock may have been held by another thread
    _lock = threading.Lock()
    _hops.clear()
    _open_streams.clear()


_process.on_loop_close("hops", _close_for_loop)
_process.on_fork("pools", _after_fork_in_child)
