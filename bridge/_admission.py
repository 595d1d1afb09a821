"""The per-endpoint admission controller: concurrency, RPM and TPM, pauses, learning, AIMD.

An endpoint is a base URL (scheme, host, port and the path up to ``/v1``) plus a short
SHA-256 of the API key; the key itself is never kept. One :class:`Controller` per endpoint
serves the whole process: every thread, every event loop, every client. Its state sits
behind a :class:`threading.Lock` and waiters are woken thread-safely, so async clients on
any loop and sync clients in any thread share it. Waiting happens outside the lock.

Admission of one request, in order:

1. a concurrency slot (FIFO; the cap shrinks by half on a 429 and grows by one after a
   cap's worth of successes in a row);
2. a place in the RPM and TPM token buckets, reserved in arrival order: the bucket may go
   below zero, and each request sleeps until its reservation is covered. A 429 pauses
   the whole endpoint for the server's ``retry-after``; requests that reserved before the
   pause reserve again after it, so the end of a pause is no burst.

A bucket holds half a second of quota. The provider's own bucket (about a second of quota)
then never empties under our pacing, and arrival jitter does not turn into 429s.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ._limits import LEARN, Limits
from ._stats import EndpointStats, Recorder

if TYPE_CHECKING:
    from .stores import RedisStore

__all__ = ["Controller", "Ticket", "all_stats", "controller_for", "endpoint_of"]

logger = logging.getLogger(__name__)

#: Seconds of quota a local bucket holds: the largest burst we ever send.
BUCKET_SECONDS = 0.5
#: The pause when a 429 names no wait.
DEFAULT_PAUSE = 1.0

_WAITING, _GRANTED, _CANCELLED = 0, 1, 2


@dataclass(frozen=True)
class Endpoint:
    """Where requests go, and whose quota they use: a label that is safe to log."""

    base: str
    key_hash: str

    @property
    def label(self) -> str:
        return f"{self.base} key#{self.key_hash}"


def endpoint_of(url: str, secret: str) -> Endpoint:
    """The endpoint of a request URL: origin plus the path up to ``/v1``, and the key hash."""
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    path = slash + path.split("?", 1)[0]
    index = path.find("/v1/")
    prefix = path[: index + 3] if index >= 0 else ("/v1" if path == "/v1" else "")
    digest = hashlib.sha256(secret.encode()).hexdigest()[:12] if secret else "none"
    return Endpoint(f"{scheme}://{host}{prefix}", digest)


class _Bucket:
    """A token bucket that lends: reservations may take it below zero, then callers wait."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BUCKET_SECONDS)
        self.level = self.capacity
        self.stamp = now

    def reserve(self, cost: float, now: float) -> float:
        """Take ``cost`` now; return the seconds until the debt is covered (0.0 if none)."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        self.level -= cost
        return max(0.0, -self.level / self.rate)

    def give_back(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)

    def hold_back(self, seconds: float) -> None:
        """After a 429: no quota for ``seconds``, then a little slack for the provider."""
        self.level = min(self.level, -self.rate * seconds - self.capacity / 2)


class _Gate:
    """Concurrency slots, handed over in FIFO order to sync or async waiters."""

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self.limit = limit
        self.active = 0
        self._waiters: deque[_Waiter] = deque()

    def enter_or_wait(self, notify: Callable[[], None]) -> _Waiter | None:
        """Take a slot now (None), or queue a waiter that ``notify`` wakes when granted."""
        with self._lock:
            if self.active < self.limit and not self._waiters:
                self.active += 1
                return None
            waiter = _Waiter(notify)
            self._waiters.append(waiter)
            return waiter

    def leave(self) -> None:
        with self._lock:
            self.active -= 1
            self._grant()

    def abandon(self, waiter: _Waiter) -> None:
        """A waiter gave up (cancelled): return its slot if it was granted one meanwhile."""
        with self._lock:
            if waiter.state == _GRANTED:
                self.active -= 1
                self._grant()
            waiter.state = _CANCELLED

    def set_limit(self, limit: int) -> None:
        with self._lock:
            self.limit = limit
            self._grant()

    def _grant(self) -> None:
        while self._waiters and self.active < self.limit:
            waiter = self._waiters.popleft()
            if waiter.state == _WAITING:
                waiter.state = _GRANTED
                self.active += 1
                try:
                    waiter.notify()
                except RuntimeError:
                    # Its loop was closed without cancelling it: the slot goes to the next.
                    waiter.state = _CANCELLED
                    self.active -= 1

    async def enter_async(self) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(_resolve, future)

        waiter = self.enter_or_wait(wake)
        if waiter is None:
            return
        try:
            await future
        except BaseException:
            self.abandon(waiter)
            raise

    def enter_sync(self) -> None:
        event = threading.Event()
        waiter = self.enter_or_wait(event.set)
        if waiter is not None:
            event.wait()


class _Waiter:
    __slots__ = ("notify", "state")

    def __init__(self, notify: Callable[[], None]) -> None:
        self.notify = notify
        self.state = _WAITING


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(slots=True)
class Ticket:
    """One admitted attempt: what it reserved, and where it stood when sent."""

    tokens: int
    seq: int
    token_seq: int
    sent_at: float


@dataclass(slots=True)
class _Step:
    wait: float
    epoch: int
    reserved: bool


class Controller:
    """Admission for one endpoint; see the module docstring for the order of things."""

    def __init__(
        self,
        endpoint: Endpoint,
        limits: Limits,
        store: RedisStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.stats = Recorder(endpoint.label)
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._rpm = None if not isinstance(limits.rpm, int) else _Bucket(limits.rpm, now)
        self._tpm = None if not isinstance(limits.tpm, int) else _Bucket(limits.tpm, now)
        self._cap = limits.concurrency
        # With limits to learn, one request goes first: its headers say how fast to go.
        self._probing = limits.learns
        self._gate = _Gate(1 if self._probing else self._cap)
        self._paused_until = 0.0
        self._epoch = 0
        self._sent = 0
        self._tokens_sent = 0
        self._streak = 0
        self._last_decrease = -math.inf
        self._store = store

    def __repr__(self) -> str:
        return f"<Controller {self.endpoint.label} {self.limits!r}>"

    # -- admission ------------------------------------------------------------------

    async def admit_async(self, tokens: int) -> Ticket:
        """Wait for a slot and for the rate limits; the caller must :meth:`finish` it."""
        self.stats.add(queued=1)
        try:
            await self._gate.enter_async()
            try:
                await self._pace_async(tokens)
            except BaseException:
                self._gate.leave()
                raise
        finally:
            self.stats.add(queued=-1)
        return self._ticket(tokens)

    def admit_sync(self, tokens: int) -> Ticket:
        """The blocking twin of :meth:`admit_async`, for sync clients in threads."""
        self.stats.add(queued=1)
        try:
            self._gate.enter_sync()
            try:
                self._pace_sync(tokens)
            except BaseException:
                self._gate.leave()
                raise
        finally:
            self.stats.add(queued=-1)
        return self._ticket(tokens)

    async def _pace_async(self, tokens: int) -> None:
        epoch: int | None = None
        while True:
            step = self._step(tokens, epoch)
            wait = step.wait
            if step.reserved and self._store is not None:
                wait = max(wait, await self._store.reserve_async(self, tokens))
            if wait <= 0:
                return
            epoch = step.epoch
            await asyncio.sleep(wait)

    def _pace_sync(self, tokens: int) -> None:
        epoch: int | None = None
        while True:
            step = self._step(tokens, epoch)
            wait = step.wait
            if step.reserved and self._store is not None:
                wait = max(wait, self._store.reserve_sync(self, tokens))
            if wait <= 0:
                return
            epoch = step.epoch
            time.sleep(wait)

    def _step(self, tokens: int, epoch: int | None) -> _Step:
        """Reserve (again, if a pause began since ``epoch``), or confirm a reservation."""
        with self._lock:
            now = self._clock()
            paused = self._paused_until - now
            if epoch == self._epoch and paused <= 0:
                return _Step(0.0, epoch, reserved=False)
            wait = max(0.0, paused)
            if self._store is None or self._store.failed:
                for bucket, cost in ((self._rpm, 1), (self._tpm, tokens)):
                    if bucket is not None:
                        wait = max(wait, bucket.reserve(cost, now))
            return _Step(wait, self._epoch, reserved=True)

    def _ticket(self, tokens: int) -> Ticket:
        with self._lock:
            self._sent += 1
            self._tokens_sent += tokens
            ticket = Ticket(tokens, self._sent, self._tokens_sent, self._clock())
        self.stats.add(requests=1, in_flight=1)
        return ticket

    # -- feedback -----------------------------------------------------------------------

    def finish(self, ticket: Ticket) -> None:
        """The attempt is over (answered, failed or abandoned): free its slot."""
        self.stats.add(in_flight=-1)
        self.stats.latency(self._clock() - ticket.sent_at)
        self._gate.leave()

    def on_response(
        self,
        ticket: Ticket,
        status: int,
        headers: Mapping[str, str],
        *,
        max_pause: float = math.inf,
    ) -> None:
        """Learn from a response's status and rate-limit headers.

        A 429 pauses the endpoint for the server's ``retry-after``, at most ``max_pause``
        seconds (the retry policy's ``max_wait``), so one absurd header cannot stall it.
        """
        self._learn(ticket, headers)
        if status == 429:
            self.stats.add(rate_limited=1)
            self.pause(min(retry_after(headers) or DEFAULT_PAUSE, max_pause))
        elif status < 400:
            self._succeeded()
        if self._probing:
            self._end_probe()

    def settle_tokens(self, ticket: Ticket, used_in: int | None, used_out: int | None) -> None:
        """Count ``usage`` and refund (or charge) the difference from the estimate."""
        if used_in is None or used_out is None:
            return
        self.stats.add(tokens_in=used_in, tokens_out=used_out)
        extra = ticket.tokens - (used_in + used_out)
        if extra == 0:
            return
        with self._lock:
            if self._tpm is not None and (self._store is None or self._store.failed):
                self._tpm.give_back(extra)

    def pause(self, seconds: float) -> None:
        """Hold every request to this endpoint for ``seconds`` (after a 429)."""
        with self._lock:
            now = self._clock()
            until = now + seconds
            if until > self._paused_until:
                self._paused_until = until
                self._epoch += 1
                for bucket in (self._rpm, self._tpm):
                    if bucket is not None:
                        bucket.reserve(0, now)
                        bucket.hold_back(seconds)
            shrink = now - self._last_decrease > max(seconds, DEFAULT_PAUSE)
            if shrink:
                self._last_decrease = now
                self._cap = max(1, self._cap // 2)
                self._streak = 0
                self._apply_cap()
        if shrink:
            logger.info(
                "%s: 429, pausing %.3f s; concurrency now %d",
                self.endpoint.label,
                seconds,
                self._cap,
            )

    def _succeeded(self) -> None:
        with self._lock:
            self._streak += 1
            if self._cap >= self.limits.concurrency or self._streak < self._cap:
                return
            self._streak = 0
            self._cap += 1
            self._apply_cap()

    def _end_probe(self) -> None:
        with self._lock:
            if not self._probing:
                return
            self._probing = False
            self._apply_cap()

    def _apply_cap(self) -> None:
        # Under self._lock: two threads changing the cap must reach the gate in the order
        # they changed it, or a stale grow could undo a shrink. (The gate's own lock is
        # only ever taken inside this one, never the other way round.)
        if not self._probing:
            self._gate.set_limit(self._cap)

    # -- learning from headers -----------------------------------------------------------

    def _learn(self, ticket: Ticket, headers: Mapping[str, str]) -> None:
        learned = read_limits(headers)
        if not learned:
            return
        with self._lock:
            now = self._clock()
            for kind, (limit, remaining) in learned.items():
                if kind == "requests" and self.limits.rpm is LEARN:
                    self._rpm = self._adopt(self._rpm, limit, now)
                    self._rpm.level = min(self._rpm.level, remaining - (self._sent - ticket.seq))
                elif kind == "tokens" and self.limits.tpm is LEARN:
                    self._tpm = self._adopt(self._tpm, limit, now)
                    since = self._tokens_sent - ticket.token_seq
                    self._tpm.level = min(self._tpm.level, remaining - since)

    def _adopt(self, bucket: _Bucket | None, per_minute: float, now: float) -> _Bucket:
        if bucket is not None and bucket.rate * 60.0 == per_minute:
            bucket.reserve(0, now)
            return bucket
        logger.info("%s: learned a limit of %g per minute", self.endpoint.label, per_minute)
        fresh = _Bucket(per_minute, now)
        if bucket is not None:
            fresh.level = min(fresh.capacity, bucket.level)
        return fresh

    @property
    def counts_tokens(self) -> bool:
        """Whether requests must estimate their tokens: a TPM limit is in force or shared."""
        return self._tpm is not None or (self._store is not None and self.limits.tpm is not None)

    # -- introspection ---------------------------------------------------------------------

    @property
    def rates(self) -> tuple[float | None, float | None]:
        """(RPM, TPM) in force, configured or learned; None where there is none."""
        rpm, tpm = self._rpm, self._tpm
        return (
            None if rpm is None else rpm.rate * 60.0,
            None if tpm is None else tpm.rate * 60.0,
        )

    def snapshot(self) -> EndpointStats:
        rpm, tpm = self.rates
        return self.stats.snapshot(self._cap, rpm, tpm)


# -- headers ---------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The server's wait in seconds: ``retry-after-ms`` first, then ``retry-after``."""
    millis = _finite(headers.get("retry-after-ms"))
    if millis is not None:
        return max(0.0, millis / 1000.0)
    seconds = headers.get("retry-after")
    if seconds:
        number = _finite(seconds)
        return max(0.0, number) if number is not None else _http_date_wait(seconds)
    return None


def _finite(text: str | None) -> float | None:
    """A header's number, or None for a missing, malformed, infinite or NaN one."""
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _http_date_wait(value: str) -> float | None:
    from email.utils import parsedate_to_datetime  # noqa: PLC0415 - rare path

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def read_limits(headers: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """``{"requests"|"tokens": (limit per minute, remaining)}`` from OpenAI or Anthropic headers."""
    found: dict[str, tuple[float, float]] = {}
    for kind in ("requests", "tokens"):
        for limit_name, remaining_name in (
            (f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}"),
            (f"anthropic-ratelimit-{kind}-limit", f"anthropic-ratelimit-{kind}-remaining"),
        ):
            limit, remaining = headers.get(limit_name), headers.get(remaining_name)
            if limit and remaining:
                try:
                    found[kind] = (float(limit), float(remaining))
                except ValueError:
                    continue
                break
    return found


def parse_duration(text: str) -> float | None:
    """OpenAI's reset format (``20ms``, ``1.5s``, ``6m0s``) or an RFC 3339 time, in seconds."""
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return sum(float(n) * _UNITS[u] for n, u in parts)
    try:
        return max(
            0.0, datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() - time.time()
        )
    except ValueError:
        return None


# -- the process-wide registry -------------------------------------------------------------

_registry: dict[Endpoint, Controller] = {}
_registry_lock = threading.Lock()


def controller_for(endpoint: Endpoint, limits: Limits) -> Controller:
    """The process's controller for ``endpoint``; the first configuration for it wins."""
    controller = _registry.get(endpoint)
    if controller is not None:
        if controller.limits != limits:
            _warn_conflict(controller, limits)
        return controller
    with _registry_lock:
        controller = _registry.get(endpoint)
        if controller is None:
            controller = _registry[endpoint] = Controller(endpoint, limits, _store_for(limits))
        return controller


_warned: set[tuple[Endpoint, Limits]] = set()


def _warn_conflict(controller: Controller, limits: Limits) -> None:
    key = (controller.endpoint, limits)
    if key in _warned:
        return
    _warned.add(key)
    logger.warning(
        "%s already has %r; a client asking for %r shares those. Give every client of one "
        "endpoint and key the same Limits.",
        controller.endpoint.label,
        controller.limits,
        limits,
    )


def _store_for(limits: Limits) -> RedisStore | None:
    if limits.store is None:
        return None
    from .stores import RedisStore  # noqa: PLC0415 - redis is an optional dependency

    return RedisStore(limits.store, on_error=limits.on_store_error)


def all_stats() -> dict[str, EndpointStats]:
    """Every endpoint's counters, keyed by its label (base URL and key hash)."""
    with _registry_lock:
        controllers = list(_registry.values())
    return {c.endpoint.label: c.snapshot() for c in controllers}


def _after_fork_in_child() -> None:
    # The parent's waiters, slots and locks mean nothing here; start from scratch.
    global _registry_lock  # noqa: PLW0603 - the lock may have been held across fork
    _registry_lock = threading.Lock()
    _registry.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
