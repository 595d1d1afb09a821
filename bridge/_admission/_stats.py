"""Per-endpoint counters behind ``bridge.stats()``."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

__all__ = ["EndpointStats", "Recorder"]

#: Latencies kept per endpoint for the percentiles (a uniform sample of all of them).
RESERVOIR_SIZE = 2048


@dataclass(frozen=True, kw_only=True)
class EndpointStats:
    """A snapshot of one endpoint's counters.

    ``requests`` counts attempts sent (retries included); ``retries`` the attempts that
    were retries; ``rate_limited`` the 429 responses; ``in_flight`` requests sent and not
    yet answered; ``queued`` requests waiting for admission; ``tokens_in``/``tokens_out``
    what ``usage`` reported; ``latency_p50``/``latency_p95`` seconds from send to the
    complete answer (``None`` before the first one). ``max_in_flight`` is the current cap,
    ``rpm``/``tpm`` the limits in force, whole numbers (configured or learned, ``None``: none).
    """

    endpoint: str
    requests: int
    retries: int
    rate_limited: int
    in_flight: int
    queued: int
    tokens_in: int
    tokens_out: int
    latency_p50: float | None
    latency_p95: float | None
    max_in_flight: int
    rpm: int | None
    tpm: int | None


class Recorder:
    """Thread-safe counters for one endpoint, with a bounded latency reservoir."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.rate_limited = 0
        self.in_flight = 0
        self.queued = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self._seen = 0
        self._latencies: list[float] = []
        # Sampling, not security: which latencies stay in the reservoir.
        self._rng = random.Random(0)  # noqa: S311

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def latency(self, seconds: float) -> None:
        """Keep a uniform sample of every latency seen (reservoir sampling)."""
        with self._lock:
            self._seen += 1
            if len(self._latencies) < RESERVOIR_SIZE:
                self._latencies.append(seconds)
                return
            slot = self._rng.randrange(self._seen)
            if slot < RESERVOIR_SIZE:
                self._latencies[slot] = seconds

    def typical_latency(self) -> float | None:
        """The median latency seen so far, or None before the first answer."""
        with self._lock:
            ordered = sorted(self._latencies)
        return _percentile(ordered, 0.5)

    def snapshot(self, max_in_flight: int, rpm: float | None, tpm: float | None) -> EndpointStats:
        with self._lock:
            ordered = sorted(self._latencies)
            return EndpointStats(
                endpoint=self.label,
                requests=self.requests,
                retries=self.retries,
                rate_limited=self.rate_limited,
                in_flight=self.in_flight,
                queued=self.queued,
                tokens_in=self.tokens_in,
                tokens_out=self.tokens_out,
                latency_p50=_percentile(ordered, 0.50),
                latency_p95=_percentile(ordered, 0.95),
                max_in_flight=max_in_flight,
                rpm=_whole(rpm),
                tpm=_whole(tpm),
            )


def _whole(limit: float | None) -> int | None:
    # Limits are counts per minute; a learned one comes back from a per-second rate as
    # 2000.0000000000002, which would show as such.
    return None if limit is None else round(limit)


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
