"""Where every HTTP request meets admission control: httpx2 transports that wrap another.

``AdmissionTransport`` (async) and ``SyncAdmissionTransport`` wrap the transport that does
the I/O. For each request they find the endpoint's controller, estimate its tokens, wait
for admission, send, learn from the response, and retry what is worth retrying (with
tenacity). A response handed back to the SDK is never retried: a non-streaming body is
read here first (for ``usage``), and a stream is given to the caller as it arrives, so a
stream that has begun yielding is never restarted.

The official ``openai`` and ``anthropic`` SDKs are built on ``httpx2``, so these are
``httpx2`` transports. The inner async transport is one pool per bridge loop, made on
first use, because aiohttp sessions and connection pools belong to the loop that made
them; the bridge closes them as its loop closes. A request made on any other loop hops to
the default bridge's loop and is sent there (see ``_hop``). The SDKs' own retries are
never sent on top of the bridge's (see ``_sdk_retries``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import ssl
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Literal, NoReturn

import httpx2
import tenacity

from .. import _process
from .._core._runner import is_bridge_loop
from .._core._scope import current_lane, time_left
from . import _observe as observe
from . import _sdk_retries as sdk_retries
from ._controller import Controller, Ticket, controller_for, endpoint_of
from ._headers import retry_after
from ._hop import HopStream, bridge_loop, call_on
from ._limits import Limits, Retry
from ._tokens import NO_TOKENS, Estimate, estimate, resolve_accounting

__all__ = ["AdmissionTransport", "SyncAdmissionTransport", "TransportChoice"]

logger = logging.getLogger(__name__)

TransportChoice = Literal["auto", "aiohttp", "httpx"]

#: Statuses worth another attempt; every other 4xx is the caller's to fix.
RETRY_STATUSES = frozenset({408, 409, 429, *range(500, 600)})
#: Connection pool of the inner transports: the SDKs' own defaults.
POOL_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)

_USAGE_NUMBER = re.compile(
    rb'"(prompt_tokens|input_tokens|completion_tokens|output_tokens)":\s*(\d+)'
)


class RetryableStatusError(Exception):
    """An attempt got a status worth retrying (internal to the retry loop)."""

    def __init__(self, status: int, wait: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = wait


#: What a new attempt may cure: a status worth retrying, or a failed connection or timeout.
RETRYABLE = (
    RetryableStatusError,
    httpx2.TimeoutException,
    httpx2.NetworkError,
    httpx2.RemoteProtocolError,
)


class _Wait(tenacity.wait.wait_base):
    """Full-jitter exponential backoff, replaced by the server's ``retry-after`` if it sent one."""

    def __init__(self, retry: Retry) -> None:
        self._cap = retry.max_wait
        self._backoff = tenacity.wait_random_exponential(
            multiplier=retry.backoff, max=retry.max_wait
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        hint = None if outcome is None else getattr(outcome.exception(), "retry_after", None)
        if hint is not None:
            return float(min(hint, self._cap))
        return float(self._backoff(retry_state))


class _PastDeadline(tenacity.stop.stop_base):
    """Stop retrying when the wait before the next attempt would cross the deadline."""

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        left = time_left()
        return left is not None and retry_state.upcoming_sleep >= left


def _retrying_kwargs(retry: Retry, exchange: _Exchange) -> dict[str, Any]:
    return {
        "stop": tenacity.stop_after_attempt(retry.attempts) | _PastDeadline(),
        "wait": _Wait(retry),
        "retry": tenacity.retry_if_exception_type(RETRYABLE),
        "reraise": True,
        "before_sleep": exchange.retrying,
    }


def _log_retry(state: tenacity.RetryCallState, label: str, attempts: int, what: str) -> None:
    wait = state.upcoming_sleep
    logger.info(
        "%s: %s, retry %d of %d in %.3f s",
        label,
        what,
        state.attempt_number,
        attempts - 1,
        wait,
        extra={"bridge_retry_wait": wait, "bridge_retry_reason": what},
    )


# -- what both transports share: everything but the I/O ----------------------------------------


class _Exchange:
    """One request's passage through admission, retries and the response, minus the I/O.

    Both transports drive it the same way (admit, send, :meth:`answered`, read or stream,
    finish): only how they wait and read differs. It keeps the call's watch (metrics and
    traces, when anything watches) and what the last answer said.
    """

    __slots__ = ("_admit_started", "_headers", "_sent_at", "_status", "controller", "request",
                 "retry", "streamed", "watch")  # fmt: skip

    def __init__(self, controller: Controller, request: httpx2.Request, retry: Retry) -> None:
        self.controller = controller
        self.request = request
        self.retry = retry
        self.streamed = False
        self.watch = observe.watch(lambda: _describe(controller, request))
        self._headers: Mapping[str, str] = {}
        self._status = 0
        self._admit_started = self._sent_at = 0.0

    async def admit_async(self) -> Ticket:
        self._admit_started = time.monotonic()
        ticket = await self.controller.admit_async(self._tokens)
        self._sending()
        return ticket

    def admit_sync(self) -> Ticket:
        self._admit_started = time.monotonic()
        ticket = self.controller.admit_sync(self._tokens)
        self._sending()
        return ticket

    def _tokens(self) -> Estimate:
        return _tokens_of(self.controller, self.request)

    def _sending(self) -> None:
        _cap_timeout(self.request)
        self._sent_at = time.monotonic()
        self.watch.admitted(self._sent_at - self._admit_started)

    def answered(self, ticket: Ticket, response: httpx2.Response, *, last: bool) -> bool:
        """Learn from an answer; True if it is to be discarded and the request retried."""
        headers = self._headers = _plain(response.headers)
        status = self._status = response.status_code
        self.watch.answered(status, time.monotonic() - self._sent_at)
        self.controller.on_response(ticket, status, headers, max_pause=self.retry.max_wait)
        self.streamed = _is_stream(headers)
        return status in RETRY_STATUSES and not last

    def retry_status(self) -> NoReturn:
        """Raise what tells the retry loop to try again (after the answer is discarded)."""
        _retry_status(self.controller, self._status, self._headers)

    def read(self, ticket: Ticket, content: bytes) -> None:
        """A complete body: count and settle its usage."""
        scanner = _UsageScanner()
        scanner.feed(content)
        self._settle(ticket, scanner)

    def stream_ended(self, ticket: Ticket, usage: _UsageScanner) -> None:
        self._settle(ticket, usage)
        self.controller.finish(ticket)
        self.watch.end(None)

    def _settle(self, ticket: Ticket, usage: _UsageScanner) -> None:
        used_in, used_out = usage.totals()
        self.controller.settle_tokens(ticket, used_in, used_out)
        if used_in is not None and used_out is not None:
            self.watch.tokens(used_in, used_out)

    def returned(self, response: httpx2.Response) -> None:
        """The response goes back to the SDK; a stream's call ends with the stream."""
        if not self.streamed:
            self.watch.end(None)

    def retrying(self, state: tenacity.RetryCallState) -> None:
        """Before tenacity sleeps: count, log and tell the watch why."""
        outcome = state.outcome
        exc = None if outcome is None else outcome.exception()
        what = f"HTTP {exc.status}" if isinstance(exc, RetryableStatusError) else type(exc).__name__
        self.controller.stats.add(retries=1)
        self.watch.retry(what)
        _log_retry(state, self.controller.endpoint.label, self.retry.attempts, what)


def _describe(controller: Controller, request: httpx2.Request) -> observe.CallInfo:
    """What a watcher is told of a call when it starts (only when something watches)."""
    path = request.url.path
    system = "anthropic" if path.endswith("/messages") else "openai"
    operation = path.rstrip("/").rsplit("/", 1)[-1]
    operation = {"completions": "chat", "messages": "chat"}.get(operation, operation)
    model = None
    with contextlib.suppress(ValueError, TypeError, AttributeError, httpx2.RequestNotRead):
        model = json.loads(request.content).get("model")
    return observe.CallInfo(
        endpoint=controller.endpoint.label,
        system=system,
        operation=operation,
        model=model if isinstance(model, str) else None,
        lane=current_lane(),
        deadline_left=time_left(),
    )


# -- async --------------------------------------------------------------------------------


class AdmissionTransport(httpx2.AsyncBaseTransport):
    """An async transport that admits, paces and retries every request.

    Args:
        limits: the endpoint's limits (the first configuration of an endpoint wins).
        retry: the retry policy.
        inner: ``"auto"`` (aiohttp when installed, else httpx2's own), ``"aiohttp"``,
            ``"httpx"``, or a transport you built. A transport you pass is used on the
            loop the request is made on, and closed by :meth:`aclose`. The ones made here
            belong to bridge loops: a request made on another loop is sent on the default
            bridge's, and its response (each chunk of a stream) comes back.
    """

    def __init__(
        self,
        *,
        limits: Limits,
        retry: Retry,
        inner: TransportChoice | httpx2.AsyncBaseTransport = "auto",
    ) -> None:
        self._limits = limits
        self._retry = retry
        self._given = inner if isinstance(inner, httpx2.AsyncBaseTransport) else None
        self._choice: TransportChoice = "auto" if self._given is not None else inner  # type: ignore[assignment]
        if self._given is None:
            check_choice(self._choice)

    def __repr__(self) -> str:
        return f"<AdmissionTransport {self._limits!r} {self._retry!r}>"

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        attempt = sdk_retries.sdk_attempt(request)
        if attempt is None:
            return await self._dispatch(request)
        replayed = sdk_retries.replay(request, attempt)
        if replayed is not None:
            return replayed
        try:
            response = await self._dispatch(request)
        except Exception as exc:
            sdk_retries.failed(exc)
            raise
        sdk_retries.answered(response)
        return response

    async def _dispatch(self, request: httpx2.Request) -> httpx2.Response:
        if self._given is not None:
            return await self._send(request, self._given)
        loop = asyncio.get_running_loop()
        if is_bridge_loop(loop):
            return await self._send(request, _shared_inner(loop, self._choice))
        return await self._hop(request)

    async def _hop(self, request: httpx2.Request) -> httpx2.Response:
        """Send from a loop that is not a bridge's, on the default bridge's loop."""
        loop = bridge_loop()
        if not isinstance(request.stream, httpx2.ByteStream):
            await _read_body(request)
        return await call_on(loop, self._send_here, request, orphan=_close_orphan)

    async def _send_here(self, request: httpx2.Request) -> httpx2.Response:
        """On a bridge's loop, for a caller on another: a stream is read here, chunk by chunk."""
        loop = asyncio.get_running_loop()
        response = await self._send(request, _shared_inner(loop, self._choice))
        if not response.is_closed and isinstance(response.stream, httpx2.AsyncByteStream):
            response.stream = HopStream(response.stream, loop)
        return response

    async def _send(
        self, request: httpx2.Request, inner: httpx2.AsyncBaseTransport
    ) -> httpx2.Response:
        controller = self._controller(request)
        if request.url.userinfo and _is_aiohttp(inner):
            raise ValueError(
                "the base URL holds a user name or password (user:password@host), which the "
                "aiohttp transport cannot send beside the API key's header: take them out of "
                "base_url and pass the key as api_key, or use transport='httpx'"
            )
        exchange = _Exchange(controller, request, self._retry)
        try:
            response = await self._attempts(exchange, inner)
        except BaseException as exc:
            exchange.watch.end(exc)
            raise
        exchange.returned(response)
        return response

    async def _attempts(
        self, exchange: _Exchange, inner: httpx2.AsyncBaseTransport
    ) -> httpx2.Response:
        attempts = self._retry.attempts
        # Most requests succeed first time, and tenacity's machinery costs about a tenth of
        # a zero-latency request's client time, so the first attempt runs outside it.
        try:
            return await self._attempt(exchange, inner, last=attempts == 1)
        except RETRYABLE as exc:
            if attempts == 1:
                raise
            first: BaseException | None = exc
        async for attempt in tenacity.AsyncRetrying(**_retrying_kwargs(self._retry, exchange)):
            with attempt:
                if first is not None:  # hand tenacity the first failure as its attempt 1
                    failure, first = first, None
                    raise failure
                last = attempt.retry_state.attempt_number >= attempts
                return await self._attempt(exchange, inner, last=last)
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    async def _attempt(
        self, exchange: _Exchange, inner: httpx2.AsyncBaseTransport, *, last: bool
    ) -> httpx2.Response:
        request = exchange.request
        ticket = await exchange.admit_async()
        try:
            try:
                response = await inner.handle_async_request(request)
            except (httpx2.ConnectTimeout, httpx2.ConnectError) as exc:
                raise _honest(exc, request) from exc
            if exchange.answered(ticket, response, last=last):
                await _discard_async(response)
                exchange.retry_status()
            if not exchange.streamed:
                try:
                    await response.aread()
                except httpx2.ConnectTimeout as exc:
                    raise _honest(exc, request) from exc.__cause__
                exchange.read(ticket, response.content)
        except BaseException:
            exchange.controller.finish(ticket)
            raise
        if exchange.streamed:
            response.stream = _AsyncMeteredStream(response.stream, exchange, ticket)
        else:
            exchange.controller.finish(ticket)
        return response

    def _controller(self, request: httpx2.Request) -> Controller:
        return _controller_for(request, self._limits)

    async def aclose(self) -> None:
        """Close the transport you passed; a shared pool stays with the bridge's loop."""
        if self._given is not None:
            await self._given.aclose()


async def _read_body(request: httpx2.Request) -> None:
    """Read a streamed body on the caller's loop (an async generator may belong to it), and
    send it with a length: what the bridge sends is bytes."""
    body = await request.aread()
    if "transfer-encoding" in request.headers:
        del request.headers["transfer-encoding"]
    request.headers["content-length"] = str(len(body))


def _close_orphan(response: httpx2.Response) -> None:
    """A response its caller no longer waits for: close its stream where it lives."""
    if isinstance(response.stream, HopStream):
        response.stream.close_soon()


class _AsyncMeteredStream(httpx2.AsyncByteStream):
    """A streamed body passed through as it arrives; at its end, usage is counted."""

    def __init__(self, inner: Any, exchange: _Exchange, ticket: Ticket) -> None:
        self._inner = inner
        self._exchange = exchange
        self._ticket = ticket
        self._usage = _UsageScanner()
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                self._usage.feed(chunk)
                yield chunk
        except httpx2.ConnectTimeout as exc:
            raise _honest(exc) from exc.__cause__

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._end()

    def _end(self) -> None:
        if not self._done:
            self._done = True
            self._exchange.stream_ended(self._ticket, self._usage)


async def _discard_async(response: httpx2.Response) -> None:
    with contextlib.suppress(httpx2.HTTPError):
        await response.aread()
    await response.aclose()


# -- sync ------------------------------------------------------------------------------------


class SyncAdmissionTransport(httpx2.BaseTransport):
    """The blocking twin of :class:`AdmissionTransport`, for sync SDK clients in threads."""

    def __init__(
        self, *, limits: Limits, retry: Retry, inner: httpx2.BaseTransport | None = None
    ) -> None:
        self._limits = limits
        self._retry = retry
        self._given = inner

    def __repr__(self) -> str:
        return f"<SyncAdmissionTransport {self._limits!r} {self._retry!r}>"

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        attempt = sdk_retries.sdk_attempt(request)
        if attempt is None:
            return self._send(request)
        replayed = sdk_retries.replay(request, attempt)
        if replayed is not None:
            return replayed
        try:
            response = self._send(request)
        except Exception as exc:
            sdk_retries.failed(exc)
            raise
        sdk_retries.answered(response)
        return response

    def _send(self, request: httpx2.Request) -> httpx2.Response:
        exchange = _Exchange(_controller_for(request, self._limits), request, self._retry)
        try:
            response = self._attempts(exchange, self._inner())
        except BaseException as exc:
            exchange.watch.end(exc)
            raise
        exchange.returned(response)
        return response

    def _attempts(self, exchange: _Exchange, inner: httpx2.BaseTransport) -> httpx2.Response:
        attempts = self._retry.attempts
        try:  # outside tenacity first, as in AdmissionTransport._attempts
            return self._attempt(exchange, inner, last=attempts == 1)
        except RETRYABLE as exc:
            if attempts == 1:
                raise
            first: BaseException | None = exc
        for attempt in tenacity.Retrying(**_retrying_kwargs(self._retry, exchange)):
            with attempt:
                if first is not None:
                    failure, first = first, None
                    raise failure
                last = attempt.retry_state.attempt_number >= attempts
                return self._attempt(exchange, inner, last=last)
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    def _attempt(
        self, exchange: _Exchange, inner: httpx2.BaseTransport, *, last: bool
    ) -> httpx2.Response:
        ticket = exchange.admit_sync()
        try:
            response = inner.handle_request(exchange.request)
            if exchange.answered(ticket, response, last=last):
                _discard_sync(response)
                exchange.retry_status()
            if not exchange.streamed:
                response.read()
                exchange.read(ticket, response.content)
        except BaseException:
            exchange.controller.finish(ticket)
            raise
        if exchange.streamed:
            response.stream = _SyncMeteredStream(response.stream, exchange, ticket)
        else:
            exchange.controller.finish(ticket)
        return response

    def _inner(self) -> httpx2.BaseTransport:
        return self._given if self._given is not None else _shared_sync_inner()

    def close(self) -> None:
        """Close the transport you passed; the shared pool stays for other clients."""
        if self._given is not None:
            self._given.close()


class _SyncMeteredStream(httpx2.SyncByteStream):
    def __init__(self, inner: Any, exchange: _Exchange, ticket: Ticket) -> None:
        self._inner = inner
        self._exchange = exchange
        self._ticket = ticket
        self._usage = _UsageScanner()
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._usage.feed(chunk)
            yield chunk

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            if not self._done:
                self._done = True
                self._exchange.stream_ended(self._ticket, self._usage)


def _discard_sync(response: httpx2.Response) -> None:
    with contextlib.suppress(httpx2.HTTPError):
        response.read()
    response.close()


# -- shared helpers ----------------------------------------------------------------------------


def check_choice(choice: object) -> None:
    if choice not in ("auto", "aiohttp", "httpx"):
        raise ValueError(
            f"transport must be 'auto', 'aiohttp', 'httpx' or an httpx2.AsyncBaseTransport, "
            f"got {choice!r}"
        )


def make_async_inner(choice: TransportChoice) -> httpx2.AsyncBaseTransport:
    """The transport that does the I/O: aiohttp's when installed (faster), else httpx2's."""
    if choice in ("auto", "aiohttp"):
        aiohttp_transport = _aiohttp_transport_class()
        if aiohttp_transport is not None:
            transport: httpx2.AsyncBaseTransport = aiohttp_transport(
                limits=POOL_LIMITS, verify=ssl_context()
            )
            return transport
        if choice == "aiohttp":
            raise ImportError(
                "transport='aiohttp' needs aiohttp and the SDK's aiohttp adapter: "
                "pip install 'openai[aiohttp]' (or use transport='httpx')"
            )
        logger.debug("aiohttp transport unavailable; using httpx2's own")
    return httpx2.AsyncHTTPTransport(limits=POOL_LIMITS, verify=ssl_context())


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """One default TLS context for every pool of the process.

    Loading the CA certificates costs tens of milliseconds; made once (by preloading, in a
    web server's master before it forks), a worker's first request does not pay it.
    """
    return httpx2.create_ssl_context()


def _is_aiohttp(transport: httpx2.AsyncBaseTransport) -> bool:
    return type(transport).__name__ == "AiohttpTransport"


def _aiohttp_transport_class() -> Any:
    # The SDKs vendor the httpx2 flavour of httpx-aiohttp (their `aiohttp` extra).
    for module in ("openai._vendor.httpx_aiohttp", "anthropic._vendor.httpx_aiohttp"):
        try:
            found = __import__(module, fromlist=["AiohttpTransport"])
        except ImportError:
            continue
        return found.AiohttpTransport
    return None


_KEY_HEADERS = (b"x-api-key", b"api-key", b"authorization")
# Request -> controller, without hashing the key or parsing the URL again for every request
# (together several percent of a fast request's client time). Bounded, and per process.
_controllers: dict[tuple[object, ...], Controller] = {}
_CACHE_SIZE = 256


def _controller_for(request: httpx2.Request, limits: Limits) -> Controller:
    url, raw_key = request.url, _raw_key(request.headers)
    path = url.raw_path
    cut = path.find(b"/v1/")
    # hash(), not the key itself: the raw key is never kept, not even in this cache (nor
    # the URL's user-info: host and port only).
    prefix = path[:cut] if cut >= 0 else path
    # A key in the query (?key=...) is part of the endpoint too (endpoint_of picks it out).
    credential = hash((raw_key, url.query))
    cache_key = (limits, url.raw_scheme, url.raw_host, url.port, prefix, credential)
    controller = _controllers.get(cache_key)
    if controller is None:
        if len(_controllers) >= _CACHE_SIZE:
            _controllers.clear()
        secret = _secret(raw_key.decode("latin-1"))
        text = str(url)
        endpoint = endpoint_of(text, secret)
        accounting = resolve_accounting(limits.token_accounting, text)
        controller = _controllers[cache_key] = controller_for(endpoint, limits, accounting)
    return controller


def _raw_key(headers: httpx2.Headers) -> bytes:
    """The raw header value that carries the API key, found in one pass."""
    found: dict[bytes, bytes] = {}
    for name, value in headers.raw:
        lowered = name.lower()
        if lowered in _KEY_HEADERS:
            found[lowered] = value
    return next((found[name] for name in _KEY_HEADERS if found.get(name)), b"")


def _secret(value: str) -> str:
    """The API key in a key header's value (hashed by the caller, never stored)."""
    return value[7:] if value[:7].lower() == "bearer " else value


def _plain(headers: httpx2.Headers) -> dict[str, str]:
    """The headers as a plain dict with lower-case names, built in one pass.

    ``httpx2.Headers.get`` scans and decodes every header per lookup, and a response is
    looked up about a dozen times, which showed up as several percent of client time.
    """
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers.raw}


def _honest(
    exc: httpx2.TransportError, request: httpx2.Request | None = None
) -> httpx2.TransportError:
    """The error that really happened, named, where the transport says less or other.

    The SDKs' vendored aiohttp adapter maps every ``aiohttp.ClientConnectionError`` (a
    refused connection, a server that hung up) to ``ConnectTimeout``, which the SDK then
    reports as "Request timed out"; httpx2's own says "All connection attempts failed".
    Both keep the operating system's error in their chain: that is what is named. Real
    timeouts keep their type.
    """
    os_error = _os_error(exc)
    if os_error is not None:
        where = "the server" if request is None else f"{request.url.host}:{request.url.port or ''}"
        reason = os.strerror(os_error.errno) if os_error.errno else str(os_error)
        return httpx2.ConnectError(f"cannot connect to {where}: {reason}")
    cause = exc.__cause__
    if isinstance(exc, httpx2.ConnectTimeout) and not isinstance(cause, TimeoutError | None):
        return httpx2.RemoteProtocolError(f"the server closed the connection: {cause}")
    return exc


def _os_error(exc: BaseException) -> OSError | None:
    """The first operating-system error with an errno in ``exc``'s chain, if a timeout isn't."""
    seen: BaseException | None = exc
    for _ in range(8):  # chains are short; this bounds a cyclic one
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None or isinstance(seen, TimeoutError):
            return None
        if isinstance(seen, OSError) and seen.errno:
            return seen
    return None


def _cap_timeout(request: httpx2.Request) -> None:
    """Cut the request's timeouts to the time the ``bridge.deadline()`` in force leaves."""
    left = time_left()
    if left is None:
        return
    timeout = dict(request.extensions.get("timeout") or {})
    for phase in ("connect", "read", "write", "pool"):
        given = timeout.get(phase)
        timeout[phase] = max(0.001, left if given is None else min(given, left))
    request.extensions["timeout"] = timeout


def _retry_status(controller: Controller, status: int, headers: Mapping[str, str]) -> NoReturn:
    raise RetryableStatusError(status, retry_after(headers, controller.complain))


def _is_stream(headers: Mapping[str, str]) -> bool:
    return headers.get("content-type", "").startswith("text/event-stream")


def _tokens_of(controller: Controller, request: httpx2.Request) -> Estimate:
    """The request's tokens, estimated only when a token limit is in force (JSON costs)."""
    if not controller.counts_tokens:
        return NO_TOKENS
    try:
        content = request.content
    except httpx2.RequestNotRead:
        return NO_TOKENS
    return estimate(request.method, request.url.path, content)


class _UsageScanner:
    """Finds ``usage`` numbers in a body or an SSE stream, without parsing every chunk."""

    def __init__(self) -> None:
        self.prompt: int | None = None
        self.completion: int | None = None
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk
        if b"_tokens" in data:
            for name, number in _USAGE_NUMBER.findall(data):
                if name in (b"prompt_tokens", b"input_tokens"):
                    self.prompt = max(self.prompt or 0, int(number))
                else:
                    self.completion = int(number)
        self._tail = data[-40:]

    def totals(self) -> tuple[int | None, int | None]:
        return self.prompt, self.completion


# -- lifecycle: one shared pool per bridge loop, closed with it, forgotten after fork ----------
#
# Every client made by bridge.openai()/anthropic()/http_client() sends through the pool of
# the loop it runs on, shared by all of them: a client made per call or per view and then
# dropped leaves nothing open behind it, and connections are reused across clients.

_shared: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, httpx2.AsyncBaseTransport]
] = weakref.WeakKeyDictionary()
_sync_pool: httpx2.BaseTransport | None = None
_sync_lock = threading.Lock()
# Pools inherited across a fork: closing them would touch the parent's sockets, and
# letting aiohttp sessions be collected makes them warn, so the child keeps them.
_abandoned: list[object] = []


def _shared_inner(
    loop: asyncio.AbstractEventLoop, choice: TransportChoice
) -> httpx2.AsyncBaseTransport:
    pools = _shared.get(loop)
    if pools is None:
        pools = _shared[loop] = {}
    kind = "httpx" if choice == "httpx" else "aiohttp"
    inner = pools.get(kind)
    if inner is None:
        inner = pools[kind] = make_async_inner(choice)
    return inner


def _shared_sync_inner() -> httpx2.BaseTransport:
    global _sync_pool  # noqa: PLW0603 - one pool per process, made on first use
    pool = _sync_pool
    if pool is not None:
        return pool
    with _sync_lock:
        if _sync_pool is None:
            _sync_pool = httpx2.HTTPTransport(limits=POOL_LIMITS, verify=ssl_context())
        return _sync_pool


async def _close_for_loop(loop: asyncio.AbstractEventLoop) -> None:
    for inner in _shared.pop(loop, {}).values():
        await inner.aclose()


def _close_sync_pool() -> None:
    global _sync_pool
    pool, _sync_pool = _sync_pool, None
    if pool is not None:
        pool.close()


def _after_fork_in_child() -> None:
    global _sync_pool, _sync_lock
    _controllers.clear()  # the child's controllers are new (see _admission)
    for pools in list(_shared.values()):
        _abandoned.extend(pools.values())
    _shared.clear()
    _abandoned.append(_sync_pool)
    _sync_pool, _sync_lock = None, threading.Lock()


_process.on_loop_close("pools", _close_for_loop)
_process.at_exit("pools", _close_sync_pool)
_process.on_fork("pools", _after_fork_in_child)
