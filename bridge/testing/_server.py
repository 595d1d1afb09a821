"""The simulated server: aiohttp's low-level HTTP server, one event loop, one process.

The low-level :class:`aiohttp.web.Server` skips the router and middleware
machinery, which matters at thousands of requests per second. It is created
with ``handler_cancellation=True`` so that a client that goes away cancels its
handler: that is how ``disconnected`` sees cancellations reach the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import os
import random
import signal
import socket
import struct
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

from ._config import ServerConfig
from ._endpoints import ENDPOINTS, BadRequest, Call, Endpoint, dumps, parse_json
from ._ratelimit import (
    Decision,
    RateLimiter,
    anthropic_headers,
    openai_headers,
    retry_headers,
)

__all__ = ["Simulator", "run"]

_JSON = "application/json"
# An injected 429 has no bucket behind it; providers usually say "about a second".
_INJECTED_RETRY_AFTER = 1.0


class Counters:
    """What ``GET /_stats`` reports."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.clear()

    def clear(self) -> None:
        """Zero everything but ``in_flight``, which counts requests still running."""
        self.requests = 0
        self.max_in_flight = self.in_flight
        self.disconnected = 0
        self.rate_limited = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.status_counts: Counter[int] = Counter()
        self.endpoints: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()

    def enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "disconnected": self.disconnected,
            "rate_limited": self.rate_limited,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "endpoints": dict(self.endpoints),
            "faults": dict(self.faults),
        }


@dataclass
class _Exchange:
    """One API request on its way through the simulator."""

    request: BaseRequest
    endpoint: Endpoint
    call: Call | None = None
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None
    used_output: int = 0  # output tokens of a complete reply, settled against OTPM/TPM
    # Set before the server drops a connection on purpose, so that it does not
    # count as the client going away.
    closed_by_server: bool = False

    @property
    def parsed(self) -> Call:
        assert self.call is not None  # set right after parsing, before any reply
        return self.call


class Simulator:
    """Answers every request; the aiohttp handler is :meth:`handle`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.counters = Counters()
        self.limiter = RateLimiter(
            rpm=config.rpm,
            tpm=config.tpm,
            itpm=config.itpm,
            otpm=config.otpm,
            token_accounting=config.token_accounting,
            burst_seconds=config.burst_seconds,
        )
        self._fault_rates = [(k, r) for k, r in config.fault_rates().items() if r > 0]
        self._seed_rngs()

    def _seed_rngs(self) -> None:
        # Separate generators, so changing the jitter never changes which requests fail.
        # Simulated faults need repeatability, not cryptographic strength.
        self._fault_rng = random.Random(self.config.seed)  # noqa: S311
        self._jitter_rng = random.Random(self.config.seed + 1)  # noqa: S311
        self._header_rng = random.Random(self.config.seed + 2)  # noqa: S311

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        """Route one request."""
        endpoint = ENDPOINTS.get(request.path)
        if endpoint is not None:
            if request.method != "POST":
                return _json(405, endpoint.error(405, f"Use POST for {request.path}."))
            return await self._api(request, endpoint)
        if request.path == "/_stats" and request.method == "GET":
            return _json(200, self.counters.to_json())
        if request.path == "/_reset" and request.method == "POST":
            return self._reset()
        message = (
            f"Unknown path {request.method} {request.path}: use POST "
            "/v1/chat/completions, /v1/messages, /v1/embeddings, /_reset or GET /_stats."
        )
        return _json(404, ENDPOINTS["/v1/chat/completions"].error(404, message))

    def _reset(self) -> web.Response:
        self.counters.clear()
        self.limiter.clear()
        self._seed_rngs()
        return _json(200, {"reset": True})

    async def _api(self, request: BaseRequest, endpoint: Endpoint) -> web.StreamResponse:
        exchange = _Exchange(request, endpoint)
        self.counters.enter()
        try:
            return await self._answer(exchange)
        except asyncio.CancelledError:
            if not exchange.closed_by_server:
                self.counters.disconnected += 1
            raise
        finally:
            self.counters.in_flight -= 1

    async def _answer(self, exchange: _Exchange) -> web.StreamResponse:
        endpoint = exchange.endpoint
        try:
            call = exchange.call = endpoint.parse(parse_json(await exchange.request.read()))
        except BadRequest as exc:
            return self._error(exchange, 400, exc.message, param=exc.param)
        key = _api_key(exchange.request)
        decision = self.limiter.admit(key, call.cost)
        exchange.headers = {**self._limit_headers(endpoint, decision), **self._overrides()}
        if not decision.admitted:
            return self._rate_limited(exchange, decision)
        self.counters.requests += 1
        self.counters.endpoints[endpoint.name] += 1
        self.counters.tokens_in += call.prompt_tokens
        exchange.fault = self._draw_fault(call)
        try:
            await self._sleep(self._latency())
            if exchange.fault is not None:
                return await self._fault(exchange)
            return await self._reply(exchange)
        finally:
            self.limiter.settle(key, call.cost, exchange.used_output)

    async def _reply(self, exchange: _Exchange) -> web.StreamResponse:
        call = exchange.parsed
        if call.stream:
            return await self._stream(exchange)
        self.counters.tokens_out += call.completion_tokens
        exchange.used_output = call.completion_tokens
        self.counters.status_counts[200] += 1
        return _json(200, exchange.endpoint.respond(call), exchange.headers)

    async def _stream(self, exchange: _Exchange) -> web.StreamResponse:
        call, fault = exchange.parsed, exchange.fault
        events = exchange.endpoint.events(call)
        # Stream faults send half the events (at least the first) and then misbehave.
        stop = max(1, len(events) // 2) if fault else len(events)
        response = web.StreamResponse(
            status=200,
            headers={
                **exchange.headers,
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
            },
        )
        self.counters.status_counts[200] += 1
        try:
            await response.prepare(exchange.request)
            await self._write_events(response, events[:stop])
        except ConnectionError:
            # The client went away mid-stream; aiohttp copes with the returned response.
            self.counters.disconnected += 1
            return response
        if fault == "stream_cut":
            _drop(exchange, reset=False)
        elif fault == "stream_stall":
            await asyncio.Event().wait()  # until the client gives up and cancels us
        else:
            self.counters.tokens_out += call.completion_tokens
            exchange.used_output = call.completion_tokens
        return response

    async def _write_events(self, response: web.StreamResponse, events: list[bytes]) -> None:
        delay = self.config.chunk_delay
        if delay <= 0:
            await response.write(b"".join(events))
            return
        for index, event in enumerate(events):
            if index:
                await asyncio.sleep(delay)
            await response.write(event)

    async def _fault(self, exchange: _Exchange) -> web.StreamResponse:
        fault = exchange.fault
        assert fault is not None  # only called for a drawn fault
        self.counters.faults[fault] += 1
        if fault.startswith("status:"):
            status = int(fault.removeprefix("status:"))
            millis = self.config.rate_limit_headers
            extra = retry_headers(_INJECTED_RETRY_AFTER, millis=millis) if status == 429 else {}
            message = f"Simulated error {status} (injected fault); retry the request."
            return self._error(exchange, status, message, extra)
        if fault == "reset":
            _drop(exchange, reset=True)
            return web.Response(status=500)  # never sent: the transport is gone
        if fault == "hang":
            await asyncio.Event().wait()  # until the client gives up and cancels us
        if fault == "slow_first_byte":
            await asyncio.sleep(self.config.slow_first_byte)
        return await self._reply(exchange)

    def _draw_fault(self, call: Call) -> str | None:
        if not self._fault_rates:
            return None
        draw = self._fault_rng.random()
        for kind, rate in self._fault_rates:
            if draw < rate:
                stream_only = kind.startswith("stream_")
                return None if stream_only and not call.stream else kind
            draw -= rate
        return None

    def _latency(self) -> float:
        config = self.config
        if config.jitter <= 0:
            return config.latency
        return max(0.0, config.latency + self._jitter_rng.uniform(-config.jitter, config.jitter))

    @staticmethod
    async def _sleep(seconds: float) -> None:
        if seconds > 0:  # a zero sleep still costs a loop iteration per request
            await asyncio.sleep(seconds)

    def _overrides(self) -> dict[str, str]:
        """The configured broken headers, on the share of responses chosen to get them."""
        overrides = self.config.header_overrides
        if not overrides or self._header_rng.random() >= self.config.header_override_rate:
            return {}
        return dict(overrides)

    def _limit_headers(self, endpoint: Endpoint, decision: Decision) -> dict[str, str]:
        if not self.config.rate_limit_headers:
            return {}
        if endpoint.provider == "anthropic":
            return anthropic_headers(decision)
        return openai_headers(decision)

    def _rate_limited(self, exchange: _Exchange, decision: Decision) -> web.Response:
        self.counters.rate_limited += 1
        kind = decision.limited_by or "requests"
        wait_ms = math.ceil(decision.wait * 1000)
        message = (
            f"Rate limit reached for {kind} per minute on this API key. "
            f"Please try again in {wait_ms}ms."
        )
        extra = retry_headers(decision.wait, millis=self.config.rate_limit_headers)
        return self._error(exchange, 429, message, extra)

    def _error(
        self,
        exchange: _Exchange,
        status: int,
        message: str,
        extra_headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> web.Response:
        self.counters.status_counts[status] += 1
        body = exchange.endpoint.error(status, message, param)
        # The exchange's headers last: a configured override replaces retry-after too.
        return _json(status, body, {**(extra_headers or {}), **exchange.headers})


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=dumps(body), content_type=_JSON, headers=headers)


def _api_key(request: BaseRequest) -> str:
    """The caller's key: ``x-api-key`` (Anthropic) or ``Authorization: Bearer`` (OpenAI)."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("Authorization", "")
    return auth[7:] if auth[:7].lower() == "bearer " else auth


def _drop(exchange: _Exchange, *, reset: bool) -> None:
    """Close the connection without finishing the response; ``reset`` sends a TCP RST."""
    exchange.closed_by_server = True
    transport = exchange.request.transport
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 turns close() into an RST, the "connection reset by peer" clients see.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _main(config: ServerConfig, ready: Callable[[str], None], watch_stdin: bool) -> None:
    simulator = Simulator(config)
    server = web.Server(simulator.handle, handler_cancellation=True, access_log=None)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, config.host, config.port, backlog=2048)
    port = listener.sockets[0].getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    stop = asyncio.Event()
    _on_stop_signals(loop, stop, watch_stdin)  # before ready: the parent may stop us at once
    ready(f"http://{host}:{port}/v1")
    try:
        await stop.wait()
    finally:
        listener.close()
        await server.shutdown(0.5)


def _on_stop_signals(
    loop: asyncio.AbstractEventLoop, stop: asyncio.Event, watch_stdin: bool
) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(signum, stop.set)
    if watch_stdin:
        # The parent holds our stdin open; EOF means it died without stopping us.
        fd = sys.stdin.fileno()

        def on_readable() -> None:
            if not os.read(fd, 4096):
                loop.remove_reader(fd)
                stop.set()

        loop.add_reader(fd, on_readable)


def run(
    config: ServerConfig,
    ready: Callable[[str], None],
    *,
    watch_stdin: bool = False,
) -> None:
    """Serve until SIGTERM or SIGINT (or stdin EOF with ``watch_stdin``).

    ``ready`` gets the base URL once the socket listens. Uses uvloop when it is
    installed. Raises :class:`OSError` when the address cannot be bound.
    """
    _event_loop_runner()(_main(config, ready, watch_stdin))


def _event_loop_runner() -> Callable[[Awaitable[None]], None]:
    try:
        uvloop: Any = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.run  # type: ignore[return-value]
    return uvloop.run  # type: ignore[no-any-return]
