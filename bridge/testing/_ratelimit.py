"""Per-key token buckets, and the rate-limit headers that OpenAI and Anthropic send.

Each API key gets one bucket for requests (RPM) and one for tokens (TPM). A
bucket holds ``burst_seconds`` of quota and refills continuously, so a client
cannot beat the limit by bursting: after the burst it gets exactly the quota.

A request costs more than a full bucket can hold (a huge ``max_tokens`` under a
small TPM) is let in when the bucket is full and leaves it in debt, so it is
slowed down rather than refused forever; the long-run rate stays at the quota.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = [
    "Decision",
    "RateLimiter",
    "TokenBucket",
    "anthropic_headers",
    "format_duration",
    "openai_headers",
    "retry_headers",
]


class TokenBucket:
    """A bucket of ``capacity`` units refilled at ``rate`` units per second."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: int, burst_seconds: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = self.rate * burst_seconds
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        """Add what flowed in since the last look, up to the capacity."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` fits (0.0 when it fits now); call :meth:`refill` first."""
        needed = min(cost, self.capacity) - self.level
        return max(0.0, needed / self.rate)

    def time_to_full(self) -> float:
        """Seconds until the bucket is full again, the "reset" that providers report."""
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass(frozen=True)
class Decision:
    """The outcome of one admission check, with what the rate-limit headers report."""

    admitted: bool
    wait: float  # seconds until the request would fit; 0.0 when admitted
    limited_by: str | None  # "requests" or "tokens" when refused
    requests: tuple[int, int, float] | None  # (limit per minute, remaining, reset seconds)
    tokens: tuple[int, int, float] | None


class RateLimiter:
    """RPM and TPM buckets per API key; ``None`` limits mean unlimited."""

    def __init__(
        self,
        *,
        rpm: int | None,
        tpm: int | None,
        burst_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rpm = rpm
        self._tpm = tpm
        self._burst = burst_seconds
        self._clock = clock
        self._buckets: dict[str, tuple[TokenBucket | None, TokenBucket | None]] = {}

    def clear(self) -> None:
        """Forget every key, so each starts again with a full bucket."""
        self._buckets.clear()

    def admit(self, key: str, cost: int) -> Decision:
        """Take one request and ``cost`` tokens from ``key``'s buckets if both fit."""
        now = self._clock()
        req, tok = self._buckets_for(key, now)
        waits = {"requests": _wait(req, 1, now), "tokens": _wait(tok, cost, now)}
        limited_by = max(waits, key=waits.__getitem__)
        wait = waits[limited_by]
        if wait <= 0.0:
            for bucket, amount in ((req, 1), (tok, cost)):
                if bucket is not None:
                    bucket.level -= amount
        return Decision(
            admitted=wait <= 0.0,
            wait=wait,
            limited_by=limited_by if wait > 0.0 else None,
            requests=_snapshot(req, self._rpm),
            tokens=_snapshot(tok, self._tpm),
        )

    def _buckets_for(self, key: str, now: float) -> tuple[TokenBucket | None, TokenBucket | None]:
        found = self._buckets.get(key)
        if found is None:
            found = (
                None if self._rpm is None else TokenBucket(self._rpm, self._burst, now),
                None if self._tpm is None else TokenBucket(self._tpm, self._burst, now),
            )
            self._buckets[key] = found
        return found


def _wait(bucket: TokenBucket | None, cost: int, now: float) -> float:
    if bucket is None:
        return 0.0
    bucket.refill(now)
    return bucket.wait_for(cost)


def _snapshot(bucket: TokenBucket | None, limit: int | None) -> tuple[int, int, float] | None:
    if bucket is None or limit is None:
        return None
    return (limit, max(0, math.floor(bucket.level)), bucket.time_to_full())


def format_duration(seconds: float) -> str:
    """Format like OpenAI's reset headers (Go durations): ``20ms``, ``1s``, ``1.5s``, ``6m0s``."""
    millis = math.ceil(seconds * 1000 - 1e-6)
    if millis < 1000:
        return f"{max(millis, 0)}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def openai_headers(decision: Decision) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers for each configured limit."""
    headers: dict[str, str] = {}
    for name, snap in (("requests", decision.requests), ("tokens", decision.tokens)):
        if snap is not None:
            limit, remaining, reset = snap
            headers[f"x-ratelimit-limit-{name}"] = str(limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(remaining)
            headers[f"x-ratelimit-reset-{name}"] = format_duration(reset)
    return headers


def anthropic_headers(decision: Decision, wall_now: float | None = None) -> dict[str, str]:
    """The ``anthropic-ratelimit-*`` headers; ``-reset`` is an RFC 3339 UTC timestamp."""
    now = time.time() if wall_now is None else wall_now
    headers: dict[str, str] = {}
    for name, snap in (("requests", decision.requests), ("tokens", decision.tokens)):
        if snap is not None:
            limit, remaining, reset = snap
            at = datetime.fromtimestamp(math.ceil(now + reset), tz=timezone.utc)
            headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return headers


def retry_headers(wait: float) -> dict[str, str]:
    """``retry-after`` in whole seconds, rounded up as providers send it, and exact milliseconds."""
    return {
        "retry-after": str(max(1, math.ceil(wait))),
        "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
    }
