"""The per-endpoint admission controller: concurrency, RPM and TPM, pauses, learning.

An endpoint is a base URL (scheme, host, port and the path up to ``/v1``; never user-info
or a query) plus a short SHA-256 of the API key; the key itself is never kept. One
:class:`Controller` per endpoint serves the whole process: every thread, every event
loop, every client. Its state sits behind a :class:`threading.Lock` and waiters are woken
thread-safely, so async clients on any loop and sync clients in any thread share it.
Waiting happens outside the lock.

Admission of one request, in order:

1. a slot in the endpoint's window (FIFO). A fresh endpoint whose limits are still to be
   learned opens with :data:`OPENING_WINDOW` slots, doubled by every clean answer up to
   ``Limits(max_in_flight=...)``, and fully open as soon as headers tell its limits or a
   429 starts rate discovery: work overlaps at once, and a storm is bounded;
2. a place in every token bucket in force (requests, tokens, and Anthropic's input and
   output tokens), reserved in arrival order: a bucket may go below zero, and each
   request sleeps until its reservation is covered. A 429 from a server whose limits are
   known pauses the whole endpoint for its ``retry-after``; requests that reserved
   before the pause reserve again after it, so the end of a pause is no burst.

Limits come from ``Limits``, else from the rate-limit headers of every response (the
server's ``remaining`` re-synchronises the buckets, so its view wins), else, for a
server that sends only 429s, from :mod:`._discovery`. Tokens are charged as the
provider charges them (:mod:`._tokens`). Headers are untrusted input (:mod:`._headers`).

A bucket holds half a second of quota. The provider's own bucket (about a second of quota)
then never empties under our pacing, and arrival jitter does not turn into 429s.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .. import _process
from .._core._scope import current_lane, deadline_at
from .._errors import DeadlineExceeded
from . import _observe as observe
from ._buckets import BUCKET_SECONDS, LANE_IDLE, Limit
from ._discovery import RateFinder
from ._endpoint import Endpoint, endpoint_of
from ._gate import Gate
from ._headers import KINDS, Reading, read_limits, retry_after
from ._limits import LEARN, Limits
from ._redis import StepReply, StepRequest
from ._stats import EndpointStats, Recorder
from ._tokens import Accounting, Estimate

if TYPE_CHECKING:
    from ._redis import RedisStore

__all__ = [
    "OPENING_WINDOW",
    "Controller",
    "Endpoint",
    "Ticket",
    "all_stats",
    "controller_for",
    "endpoint_of",
]

logger = logging.getLogger(__name__)

#: The most that charges are scaled up when a server counts more tokens than estimated,
#: and how much of the excess each clean answer takes back.
MAX_TOKEN_SCALE = 4.0
SCALE_DECAY = 0.01
#: The limit in force is the median of this many of the latest readings of it.
LIMIT_READINGS = 5
#: The pause when a 429 names no wait.
DEFAULT_PAUSE = 1.0
#: Requests a fresh endpoint lets overlap before it knows its limits: more than a view's
#: or a script's usual fan-out (the bridge's default per-call concurrency is 16), so a
#: cold process does not wait a round trip; few enough that a first burst against an
#: unknown small limit costs a bounded number of (cheap, retried) 429s.
OPENING_WINDOW: Final = 24


@dataclass(frozen=True, slots=True)
class Shared:
    """An attempt in the shared state: the running totals when it reserved (its marks),
    and the store's time when it was let go (its send time, on the cluster's clock)."""

    reserved: StepReply
    sent_at: float


@dataclass(slots=True)
class Ticket:
    """One admitted attempt: what it was charged, and the running totals when it was sent.

    ``marks[kind]`` is the endpoint's total charge of that kind, this attempt included:
    a response's ``remaining`` is the server's view just after it, so what was charged
    since then is ``total - mark``.
    """

    charges: dict[str, int]
    marks: dict[str, int]
    sent_at: float
    lane: str = "interactive"
    #: With a store: where this attempt stands in the shared state, against which shared
    #: headers and 429s are reconciled.
    shared: Shared | None = None


@dataclass(slots=True)
class _Step:
    wait: float
    epoch: int
    reserved: bool
    shared: bool = False  # an epoch of the store's, not this process's


def _configured(limits: Limits) -> dict[str, int | object | None]:
    """Each bucket kind's setting: a number, LEARN, or None for no limit."""
    return {
        "requests": limits.rpm,
        "tokens": limits.tpm,
        "input_tokens": limits.input_tpm,
        "output_tokens": limits.output_tpm,
    }


class Controller:
    """Admission for one endpoint; see the module docstring for the order of things."""

    def __init__(
        self,
        endpoint: Endpoint,
        limits: Limits,
        store: RedisStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        accounting: Accounting = "sum",
    ) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.accounting = accounting
        self.stats = Recorder(endpoint.label)
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._settings = _configured(limits)
        self._share = limits.reserve_interactive
        self._buckets: dict[str, Limit] = {
            kind: Limit(value, now, self._share)
            for kind, value in self._settings.items()
            if isinstance(value, int)
        }
        self._totals = dict.fromkeys(KINDS, 0)
        self._cap = limits.max_in_flight
        # Limits to learn: open with a bounded window until the first answers say more.
        learning = limits.rpm is LEARN or limits.tpm is LEARN
        self._opening = learning and self._cap > OPENING_WINDOW
        self._gate = Gate(OPENING_WINDOW if self._opening else self._cap)
        self._finder = RateFinder()
        self._discovering = limits.rpm is LEARN  # until headers tell the request limit
        self._paused_until = 0.0
        self._epoch = 0
        self._complained: set[str] = set()
        self._readings: dict[str, deque[float]] = {}  # see _adopt
        self._sleepers: set[Callable[[], None]] = set()  # see _sleep_async/_sleep_sync
        self._token_scale = 1.0  # see _scale_tokens
        self._scaled_at = -math.inf
        self._store = store
        self._store_key = f"{endpoint.base}|{endpoint.key_hash}"
        self._shared_rates: tuple[float, float] | None = None  # per second, as last told

    def __repr__(self) -> str:
        return f"<Controller {self.endpoint.label} {self.limits!r}>"

    # -- admission ------------------------------------------------------------------

    async def admit_async(self, estimate: Callable[[], Estimate]) -> Ticket:
        """Wait for a slot and for the rate limits; the caller must :meth:`finish` it.

        ``estimate`` gives the request's tokens; it is called once the slot is granted.

        Raises:
            DeadlineExceeded: the ``bridge.deadline()`` in force would pass first; decided
                at once when the expected wait says so, and nothing is sent either way.
        """
        deadline = self._check_deadline(estimate)
        self.stats.add(queued=1)
        try:
            if not await self._gate.enter_async(_left(deadline), current_lane()):
                raise self._late("the window of requests in flight")
            try:
                # Estimated after the slot is granted: an answer meanwhile may have taught
                # this endpoint a token limit, and a request admitted uncharged would pass it.
                charges = self._charges(estimate())
                shared = await self._pace_async(charges, deadline)
            except BaseException:
                self._gate.leave()
                raise
        finally:
            self.stats.add(queued=-1)
        return self._ticket(charges, shared)

    def admit_sync(self, estimate: Callable[[], Estimate]) -> Ticket:
        """The blocking twin of :meth:`admit_async`, for sync clients in threads."""
        deadline = self._check_deadline(estimate)
        self.stats.add(queued=1)
        try:
            if not self._gate.enter_sync(_left(deadline), current_lane()):
                raise self._late("the window of requests in flight")
            try:
                charges = self._charges(estimate())  # after the slot: see admit_async
                shared = self._pace_sync(charges, deadline)
            except BaseException:
                self._gate.leave()
                raise
        finally:
            self.stats.add(queued=-1)
        return self._ticket(charges, shared)

    def _check_deadline(self, estimate: Callable[[], Estimate]) -> float | None:
        """The deadline in force, after failing at once if admission would pass it."""
        deadline = deadline_at()
        if deadline is None:
            return None
        left = deadline - time.monotonic()  # deadlines are on the monotonic clock
        wait, why = self.expected_wait(self._charges(estimate()))
        if wait > left:
            raise DeadlineExceeded(
                f"{self.endpoint.label}: admission would wait about {wait:.2f} s for {why}, "
                f"but the deadline leaves {max(left, 0.0):.2f} s; the request was not sent",
                retry_after=wait,
            )
        return deadline

    def _late(self, why: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{self.endpoint.label}: the deadline passed while waiting for {why}; "
            "the request was not sent"
        )

    def expected_wait(self, charges: Mapping[str, int]) -> tuple[float, str]:
        """How long a request with ``charges`` would wait for admission now, and for what.

        From the pause, every bucket (their level already counts the requests queued
        ahead), and the window of requests in flight (the line ahead, at the typical
        latency). An estimate: it decides whether trying is worth it under a deadline.
        """
        with self._lock:
            now = self._clock()
            waits = [(self._paused_until - now, "a 429 pause")]
            lane = current_lane()
            for kind, limit in self._buckets.items():
                waits.append((limit.wait_for(charges.get(kind, 0), now, lane), _WHY[kind]))
        gate = self._gate
        if gate.active >= gate.limit:
            typical = self.stats.typical_latency() or 0.0
            line = (gate.waiting + 1) / gate.limit
            waits.append((line * typical, f"the window of {gate.limit} requests in flight"))
        wait, why = max(waits)
        return max(0.0, wait), why

    def _charges(self, estimate: Estimate) -> dict[str, int]:
        charges = {"requests": 1, **estimate.charges(self.accounting)}
        scale = self._token_scale
        if scale != 1.0:
            for kind in ("tokens", "input_tokens"):
                charges[kind] = math.ceil(charges[kind] * scale)
        return charges

    async def _pace_async(self, charges: dict[str, int], deadline: float | None) -> Shared | None:
        """Wait for the rate limits; with a store, where the request stands in it."""
        epoch: int | None = None
        first: StepReply | None = None
        while True:
            reply = await self._shared_step_async(charges, epoch)
            first = first or reply
            step = self._shared(reply) or self._step(charges, epoch)
            if step.wait <= 0:
                return None if first is None or reply is None else Shared(first, reply.now)
            self._check_wait(step, charges, deadline)
            epoch = step.epoch
            await self._sleep_async(step.wait)

    def _pace_sync(self, charges: dict[str, int], deadline: float | None) -> Shared | None:
        """The blocking twin of :meth:`_pace_async`."""
        epoch: int | None = None
        first: StepReply | None = None
        while True:
            reply = self._shared_step_sync(charges, epoch)
            first = first or reply
            step = self._shared(reply) or self._step(charges, epoch)
            if step.wait <= 0:
                return None if first is None or reply is None else Shared(first, reply.now)
            self._check_wait(step, charges, deadline)
            epoch = step.epoch
            self._sleep_sync(step.wait)

    def _check_wait(self, step: _Step, charges: Mapping[str, int], deadline: float | None) -> None:
        if deadline is not None and time.monotonic() + step.wait > deadline:
            if not step.shared:  # a shared reservation is reconciled by the store's refill
                self._unreserve(charges, step.epoch)
            raise self._late("the rate limits")

    # -- the shared state (Limits(store=...)) -----------------------------------------------

    async def _shared_step_async(
        self, charges: Mapping[str, int], epoch: int | None
    ) -> StepReply | None:
        store = self._store
        if store is None or store.failed:
            return None
        return await store.step_async(self._store_key, self._step_request(charges, epoch))

    def _shared_step_sync(self, charges: Mapping[str, int], epoch: int | None) -> StepReply | None:
        store = self._store
        if store is None or store.failed:
            return None
        return store.step_sync(self._store_key, self._step_request(charges, epoch))

    def _step_request(self, charges: Mapping[str, int], epoch: int | None) -> StepRequest:
        return StepRequest(
            epoch=epoch,
            lane=current_lane(),
            share=self._share,
            bucket_seconds=BUCKET_SECONDS,
            lane_idle=LANE_IDLE,
            rates=(_shared_rate(self.limits.rpm), _shared_rate(self.limits.tpm)),
            costs=(charges.get("requests", 0), charges.get("tokens", 0)),
            # The opening window, shared: every process of a cluster starting cold must not
            # open its own, or N of them storm an unknown small limit N times over.
            opening=OPENING_WINDOW if self.limits.learns else 0,
        )

    def _shared(self, reply: StepReply | None) -> _Step | None:
        """The shared state's step, or None: the store is unreachable (or there is none),
        and this process's own buckets stand in."""
        if reply is None:
            return None
        self._shared_rates = reply.rates
        return _Step(reply.wait, reply.epoch, reserved=True, shared=True)

    def _unreserve(self, charges: Mapping[str, int], epoch: int) -> None:
        """Give back a reservation that will not be used (unless a new epoch voided it)."""
        with self._lock:
            if epoch != self._epoch or (self._store is not None and not self._store.failed):
                return
            lane = current_lane()
            for kind, limit in self._buckets.items():
                limit.give_back(charges.get(kind, 0), lane)

    async def _sleep_async(self, seconds: float) -> None:
        """Sleep ``seconds``, or until a new epoch voids the reservation being waited on."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(_resolve, woken)

        with self._lock:
            self._sleepers.add(wake)
        try:
            await asyncio.wait((woken,), timeout=seconds)
        finally:
            with self._lock:
                self._sleepers.discard(wake)
            woken.cancel()

    def _sleep_sync(self, seconds: float) -> None:
        woken = threading.Event()
        with self._lock:
            self._sleepers.add(woken.set)
        try:
            woken.wait(seconds)
        finally:
            with self._lock:
                self._sleepers.discard(woken.set)

    def _wake_sleepers(self) -> None:
        # Under self._lock: every reservation was just voided; sleeping on one is pointless.
        for wake in list(self._sleepers):
            try:
                wake()
            except RuntimeError:  # its loop is closed; that sleeper is gone anyway
                self._sleepers.discard(wake)

    def _step(self, charges: Mapping[str, int], epoch: int | None) -> _Step:
        """Reserve (again, if a pause began since ``epoch``), or confirm a reservation."""
        with self._lock:
            now = self._clock()
            paused = self._paused_until - now
            if epoch == self._epoch:  # reserved already, in this epoch: just wait it out
                return _Step(max(0.0, paused), epoch, reserved=False)
            wait = max(0.0, paused)
            if self._store is None or self._store.failed:
                self._follow_finder(now)
                lane = current_lane()
                for kind, limit in self._buckets.items():
                    taken, voided = limit.reserve(charges.get(kind, 0), now, lane)
                    wait = max(wait, taken)
                    if voided:  # the other lane's rate just dropped: its sleepers reserve again
                        self._epoch += 1
                        self._wake_sleepers()
            return _Step(wait, self._epoch, reserved=True)

    def _ticket(self, charges: dict[str, int], shared: Shared | None = None) -> Ticket:
        with self._lock:
            now = self._clock()
            totals = self._totals
            for kind, amount in charges.items():
                totals[kind] += amount
            if self._discovering:
                self._finder.sent(now)
            ticket = Ticket(charges, dict(totals), now, current_lane(), shared)
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

        A 429 from a server whose limits are known (configured, or in this response's
        headers) pauses the endpoint for the server's ``retry-after``, at most
        ``max_pause`` seconds (the retry policy's ``max_wait``), so one absurd header
        cannot stall it. A 429 with nothing else feeds rate discovery instead.
        """
        readings = read_limits(headers, self.complain) if headers else []
        if readings:
            self._learn(ticket, readings)
        if status == 429:
            self.stats.add(rate_limited=1)
            self._limited(ticket, headers, bool(readings), max_pause)
            self._scale_tokens(ticket, readings)
        elif status < 400:
            if self._token_scale != 1.0:
                self._token_scale = 1.0 + (self._token_scale - 1.0) * (1.0 - SCALE_DECAY)
            if self._opening:
                self._widen()

    def _limited(
        self, ticket: Ticket, headers: Mapping[str, str], told: bool, max_pause: float
    ) -> None:
        if told or not self._discovering:
            wait = retry_after(headers, self.complain)
            self.pause(min(DEFAULT_PAUSE if wait is None else wait, max_pause))
        else:
            self._rejected(ticket)
        self._open_fully()

    def _scale_tokens(self, ticket: Ticket, readings: list[Reading]) -> None:
        """A 429 for want of tokens that our buckets thought were there: charge more.

        Prompt tokens are estimated (characters / 4, which undercounts code and most
        non-Latin scripts) and a server may count differently from this endpoint's
        ``token_accounting``. The server's ``remaining`` corrects the level; this corrects
        the charges, once per window, and decays back with every clean answer, so a
        systematic shortfall settles at a 429 every hundred or so requests.
        """
        kinds = {r.kind: r.remaining for r in readings}
        requests_left = kinds.get("requests", math.inf) >= 1
        # Only a request that was charged its tokens says the charge was short; one sent
        # before any token limit was known (a cold endpoint's opening burst) says nothing.
        charged = ticket.charges.get("tokens", 0) > 0
        short = charged and requests_left and ("tokens" in kinds or "input_tokens" in kinds)
        with self._lock:
            if short and ticket.sent_at > self._scaled_at:
                self._token_scale = min(MAX_TOKEN_SCALE, self._token_scale * 1.5)
                self._scaled_at = self._clock()

    def _rejected(self, ticket: Ticket) -> None:
        """A 429 with nothing else: rate discovery decides; a cut takes effect at once."""
        if ticket.shared is not None:  # the cluster's discovery, on the store's clock
            self._tell("reject", ticket.shared.sent_at)
        with self._lock:
            now = self._clock()
            if not self._finder.rejected(ticket.sent_at, now):
                return
            # Requests asleep on reservations made at the old rate would still go out at
            # that rate: a new epoch makes them reserve again at the new one, so the old
            # reservations are void; and the server's bucket is empty now, so ours
            # starts from nothing.
            self._epoch += 1
            self._follow_finder(now)
            bucket = self._buckets.get("requests")
            if bucket is not None:
                bucket.empty()
            self._wake_sleepers()

    def settle_tokens(self, ticket: Ticket, used_in: int | None, used_out: int | None) -> None:
        """Count ``usage``, and settle the buckets that the provider settles.

        Input and output token buckets (Anthropic's) always settle to the real counts;
        the combined token bucket only under ``"usage"`` accounting: OpenAI and Azure
        keep what they charged for the rest of the window.
        """
        if used_in is None or used_out is None:
            return
        self.stats.add(tokens_in=used_in, tokens_out=used_out)
        actual = {
            "tokens": used_in + used_out,
            "input_tokens": used_in,
            "output_tokens": used_out,
        }
        if self.accounting == "usage":
            delta = ticket.charges.get("tokens", 0) - actual["tokens"]
            lane = "i" if ticket.lane == "interactive" else "b"
            self._tell("settle", "t", lane, delta)
        with self._lock:
            if self._store is not None and not self._store.failed:
                return
            for kind, used in actual.items():
                bucket = self._buckets.get(kind)
                if bucket is None or (kind == "tokens" and self.accounting != "usage"):
                    continue
                bucket.give_back(ticket.charges.get(kind, 0) - used, ticket.lane)

    def pause(self, seconds: float) -> None:
        """Hold every request to this endpoint for ``seconds`` (after a 429)."""
        with self._lock:
            now = self._clock()
            until = now + seconds
            if until <= self._paused_until:
                return
            self._paused_until = until
            self._epoch += 1
            for bucket in self._buckets.values():
                bucket.hold_back(seconds, now)
            self._wake_sleepers()
        self._tell("pause", seconds, _shared_rate(self.limits.rpm), _shared_rate(self.limits.tpm))
        observe.paused(self.endpoint.label, seconds)
        logger.info("%s: 429, pausing %.3f s", self.endpoint.label, seconds)

    def _widen(self) -> None:
        """A clean answer while opening: double the window, up to the cap."""
        with self._lock:
            if not self._opening:
                return
            window = min(self._cap, self._gate.limit * 2)
            self._opening = window < self._cap
            self._gate.set_limit(window)

    def _open_fully(self) -> None:
        with self._lock:
            if self._opening:
                self._opening = False
                self._gate.set_limit(self._cap)

    def _follow_finder(self, now: float) -> None:
        # Under self._lock: the discovered request rate moves with time.
        if not self._discovering or not self._finder.active:
            return
        rate = self._finder.rate(now)
        bucket = self._buckets.get("requests")
        if rate is None:
            self._buckets.pop("requests", None)
        elif bucket is None:
            # Whatever the server's bucket held went into the burst that it refused.
            self._buckets["requests"] = Limit(rate * 60.0, now, self._share, empty=True)
        else:
            bucket.set_rate(rate, now)

    # -- learning from headers -----------------------------------------------------------

    def _learn(self, ticket: Ticket, readings: list[Reading]) -> None:
        separate = any(r.kind in ("input_tokens", "output_tokens") for r in readings)
        with self._lock:
            now = self._clock()
            for reading in readings:
                kind = reading.kind
                if kind == "tokens" and separate:
                    continue  # Anthropic's split input and output limits beat its total
                if self._settings[kind] is LEARN:
                    bucket: Limit | None = self._adopt(kind, reading.limit, now)
                else:  # a configured limit keeps its rate, but not a level the server denies
                    bucket = self._buckets.get(kind)
                if bucket is not None:
                    self._resync(bucket, kind, reading.remaining, ticket)
                self._tell_learned(kind, reading, ticket)
                if kind == "requests" and self._discovering:
                    self._discovering = False
                    self._finder = RateFinder()
        self._open_fully()

    def _tell_learned(self, kind: str, reading: Reading, ticket: Ticket) -> None:
        # Under self._lock. The shared buckets learn the limit (when it is to be learned)
        # and the server's view, less what the cluster charged since this request.
        code = _SHARED_KINDS.get(kind)
        if code is None or ticket.shared is None:
            return
        bucket = self._buckets.get(kind)
        told = bucket.rate if bucket is not None and self._settings[kind] is LEARN else -1.0
        reserved = ticket.shared.reserved
        mark = reserved.totals[0 if code == "r" else 1]
        self._tell("learn", code, told, reading.remaining, mark, LANE_IDLE, reserved.epoch)

    def _tell(self, *args: object) -> None:
        store = self._store
        if store is not None and not store.failed:
            store.tell(self._store_key, *args)

    def _resync(self, bucket: Limit, kind: str, remaining: float, ticket: Ticket) -> None:
        """The server's view wins where it is tighter than ours.

        It says what remains just after this request; what was charged since comes off
        it, and refill since then is not counted (the safe side). A looser view is not
        taken: our level also holds the reservations of requests still waiting to be
        sent, which the server cannot see, so raising it to the server's view would send
        them twice over. A provider that charges less than this endpoint's accounting
        costs throughput, never 429s; ``token_accounting`` says how it counts.
        """
        since = self._totals[kind] - ticket.marks.get(kind, self._totals[kind])
        bucket.lower_to(remaining - since, self._clock())

    def _adopt(self, kind: str, per_minute: float, now: float) -> Limit:
        """The bucket for a limit the server told; a new limit voids the reservations.

        The limit in force is the median of the last few readings, so one broken header
        (a proxy's, a gateway's) now and then cannot slow the endpoint down, nor speed it
        up; a real change is taken as soon as most recent answers say it.
        """
        readings = self._readings.setdefault(kind, deque(maxlen=LIMIT_READINGS))
        readings.append(per_minute)
        per_minute = statistics.median(readings)
        bucket = self._buckets.get(kind)
        if bucket is not None and abs(bucket.rate * 60.0 - per_minute) < 1e-6 * per_minute:
            return bucket
        # Voided reservations leave no debt: from empty, as after a discovery cut.
        fresh = self._buckets[kind] = Limit(per_minute, now, self._share, empty=bucket is not None)
        if bucket is not None:  # reservations made at the old rate are void; redo them now
            self._epoch += 1
            self._wake_sleepers()
        log = logger.info if bucket is None else logger.debug
        log("%s: learned a %s limit of %g per minute", self.endpoint.label, kind, per_minute)
        return fresh

    def complain(self, header: str, problem: str) -> None:
        """Log a bad header once per endpoint and header name; it is ignored every time."""
        if header in self._complained:
            return
        self._complained.add(header)
        logger.warning(
            "%s: bad %s header from the server: %s (logged once)",
            self.endpoint.label,
            header,
            problem,
        )

    @property
    def counts_tokens(self) -> bool:
        """Whether requests must estimate their tokens: a token limit is in force or shared."""
        return any(kind != "requests" for kind in self._buckets) or (
            self._store is not None and self.limits.tpm is not None
        )

    # -- introspection ---------------------------------------------------------------------

    @property
    def rates(self) -> tuple[float | None, float | None]:
        """(RPM, TPM) in force, configured, learned or discovered; None where there is none."""
        shared = self._shared_rates
        if shared is not None and self._store is not None and not self._store.failed:
            return tuple(None if r <= 0 else r * 60.0 for r in shared)  # type: ignore[return-value]
        rpm, tpm = self._buckets.get("requests"), self._buckets.get("tokens")
        return (
            None if rpm is None else rpm.rate * 60.0,
            None if tpm is None else tpm.rate * 60.0,
        )

    def snapshot(self) -> EndpointStats:
        rpm, tpm = self.rates
        return self.stats.snapshot(self._gate.limit, rpm, tpm)


# -- the process-wide registry -------------------------------------------------------------

_registry: dict[Endpoint, Controller] = {}
_registry_lock = threading.Lock()


#: The limits the store shares, by the codes its script uses.
_SHARED_KINDS = {"requests": "r", "tokens": "t"}

_WHY = {
    "requests": "the RPM limit",
    "tokens": "the TPM limit",
    "input_tokens": "the input-token limit",
    "output_tokens": "the output-token limit",
}


def _shared_rate(setting: object) -> float:
    """A limit for the store: per second, 0 for none, -1 to be learned (or found)."""
    if isinstance(setting, int):
        return setting / 60.0
    return 0.0 if setting is None else -1.0


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def controller_for(
    endpoint: Endpoint, limits: Limits, accounting: Accounting = "sum"
) -> Controller:
    """The process's controller for ``endpoint``; the first configuration for it wins."""
    controller = _registry.get(endpoint)
    if controller is not None:
        if controller.limits != limits:
            _warn_conflict(controller, limits)
        return controller
    with _registry_lock:
        controller = _registry.get(endpoint)
        if controller is None:
            controller = _registry[endpoint] = Controller(
                endpoint, limits, _store_for(limits), accounting=accounting
            )
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
    from ._redis import RedisStore  # noqa: PLC0415 - redis is an optional dependency

    return RedisStore(limits.store, on_error=limits.on_store_error, bucket_seconds=BUCKET_SECONDS)


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


_process.on_fork("controllers", _after_fork_in_child)
_process.set_stats_source(all_stats)
