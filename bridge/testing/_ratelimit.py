"""Per-key token buckets, and the rate-limit headers that OpenAI and Anthropic send.

Each API key gets one bucket for requests (RPM), one for tokens (TPM), and, when
configured, Anthropic's separate input (ITPM) and output (OTPM) token buckets. A
bucket holds ``burst_seconds`` of quota and refills continuously, so a client
cannot beat the limit by bursting: after the burst it gets exactly the quota.

What a request costs against TPM follows ``token_accounting``, because providers
differ and a client must be tested against each:

- ``"sum"``: prompt + ``max_tokens``, charged up front, never refunded (Azure OpenAI);
- ``"max"``: the larger of the two, charged up front, never refunded (OpenAI);
- ``"usage"``: prompt + ``max_tokens`` up front, settled to the tokens actually used
  once the reply is complete (gateways that count usage).

OTPM always works as Anthropic documents it: ``max_tokens`` is charged up front and
settled to the reply's output tokens at its end. ITPM charges the prompt.

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
from typing import Literal

__all__ = [
    "KINDS",
    "TOKEN_ACCOUNTING",
    "Cost",
    "Decision",
    "RateLimiter",
    "TokenAccounting",
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


TokenAccounting = Literal["sum", "max", "usage"]
TOKEN_ACCOUNTING: tuple[TokenAccounting, ...] = ("sum", "max", "usage")
#: The buckets a key may have, in the order their waits are compared.
KINDS = ("requests", "tokens", "input-tokens", "output-tokens")

Snapshot = tuple[int, int, float]  # (limit per minute, remaining, reset seconds)


@dataclass(frozen=True)
class Cost:
    """What one request asks of its key's buckets."""

    prompt: int  # input tokens
    max_output: int  # the reply's cap: max_tokens, or the server's default; 0 for embeddings

    def tokens(self, accounting: TokenAccounting) -> int:
        if accounting == "max":
            return max(self.prompt, self.max_output)
        return self.prompt + self.max_output


@dataclass(frozen=True)
class Decision:
    """The outcome of one admission check, with what the rate-limit headers report."""

    admitted: bool
    wait: float  # seconds until the request would fit; 0.0 when admitted
    limited_by: str | None  # a kind from KINDS when refused
    snapshots: dict[str, Snapshot]  # per configured kind

    @property
    def requests(self) -> Snapshot | None:
        return self.snapshots.get("requests")

    @property
    def tokens(self) -> Snapshot | None:
        return self.snapshots.get("tokens")


class RateLimiter:
    """RPM, TPM, ITPM and OTPM buckets per API key; ``None`` limits mean unlimited."""

    def __init__(
        self,
        *,
        rpm: int | None,
        tpm: int | None,
        burst_seconds: float,
        itpm: int | None = None,
        otpm: int | None = None,
        token_accounting: TokenAccounting = "sum",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = dict(zip(KINDS, (rpm, tpm, itpm, otpm), strict=True))
        self._burst = burst_seconds
        self._accounting = token_accounting
        self._clock = clock
        self._buckets: dict[str, dict[str, TokenBucket]] = {}

    def clear(self) -> None:
        """Forget every key, so each starts again with a full bucket."""
        self._buckets.clear()

    def admit(self, key: str, cost: Cost | int) -> Decision:
        """Take one request and its tokens from ``key``'s buckets if all of them fit.

        An ``int`` cost is a number of tokens with no output cap (as in embeddings).
        """
        if isinstance(cost, int):
            cost = Cost(cost, 0)
        now = self._clock()
        buckets = self._buckets_for(key, now)
        amounts = self._amounts(cost)
        waits = {kind: _wait(buckets.get(kind), amounts[kind], now) for kind in KINDS}
        limited_by = max(waits, key=waits.__getitem__)
        wait = waits[limited_by]
        if wait <= 0.0:
            for kind, bucket in buckets.items():
                bucket.level -= amounts[kind]
        return Decision(
            admitted=wait <= 0.0,
            wait=wait,
            limited_by=limited_by if wait > 0.0 else None,
            snapshots=self._snapshots(buckets),
        )

    def settle(self, key: str, cost: Cost | int, used_output: int) -> None:
        """A reply is complete with ``used_output`` tokens: give back what was over-charged.

        OTPM is always settled; TPM only with ``token_accounting="usage"``.
        """
        if isinstance(cost, int):
            return
        buckets = self._buckets.get(key, {})
        refund = max(0, cost.max_output - used_output)
        output = buckets.get("output-tokens")
        if output is not None:
            output.level = min(output.capacity, output.level + refund)
        tokens = buckets.get("tokens")
        if tokens is not None and self._accounting == "usage":
            tokens.level = min(tokens.capacity, tokens.level + refund)

    def _amounts(self, cost: Cost) -> dict[str, int]:
        return {
            "requests": 1,
            "tokens": cost.tokens(self._accounting),
            "input-tokens": cost.prompt,
            "output-tokens": cost.max_output,
        }

    def _buckets_for(self, key: str, now: float) -> dict[str, TokenBucket]:
        found = self._buckets.get(key)
        if found is None:
            found = self._buckets[key] = {
                kind: TokenBucket(limit, self._burst, now)
                for kind, limit in self._limits.items()
                if limit is not None
            }
        return found

    def _snapshots(self, buckets: dict[str, TokenBucket]) -> dict[str, Snapshot]:
        return {
            kind: (limit, max(0, math.floor(bucket.level)), bucket.time_to_full())
            for kind, bucket in buckets.items()
            if (limit := self._limits[kind]) is not None
        }


def _wait(bucket: TokenBucket | None, cost: int, now: float) -> float:
    if bucket is None:
        return 0.0
    bucket.refill(now)
    return bucket.wait_for(cost)


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
    """The ``x-ratelimit-*`` headers for RPM and TPM (OpenAI has no ITPM/OTPM headers)."""
    headers: dict[str, str] = {}
    for name in ("requests", "tokens"):
        snap = decision.snapshots.get(name)
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
    for name, snap in decision.snapshots.items():
        if snap is not None:
            limit, remaining, reset = snap
            at = datetime.fromtimestamp(math.ceil(now + reset), tz=timezone.utc)
            headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return headers


def retry_headers(wait: float, *, millis: bool = True) -> dict[str, str]:
    """``retry-after`` in whole seconds, rounded up as providers send it, and exact milliseconds.

    ``millis=False``: only ``retry-after``, as many gateways and proxies answer.
    """
    headers = {"retry-after": str(max(1, math.ceil(wait)))}
    if millis:
        headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
    return headers
