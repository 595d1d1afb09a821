"""Token buckets that lend: the pacing of requests and tokens inside one process."""

from __future__ import annotations

__all__ = ["BUCKET_SECONDS", "Bucket"]

#: Seconds of quota a local bucket holds: the largest burst we ever send.
BUCKET_SECONDS = 0.5


class Bucket:
    """A token bucket that lends: reservations may take it below zero, then callers wait."""

    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, per_minute: float, now: float, level: float | None = None) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BUCKET_SECONDS)
        self.level = self.capacity if level is None else min(self.capacity, level)
        self.stamp = now

    def reserve(self, cost: float, now: float) -> float:
        """Take ``cost`` now; return the seconds until the debt is covered (0.0 if none)."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        self.level -= cost
        return max(0.0, -self.level / self.rate)

    def set_rate(self, per_second: float, now: float) -> None:
        self.reserve(0, now)  # what flowed in so far flowed at the old rate
        self.rate = per_second
        self.capacity = max(1.0, per_second * BUCKET_SECONDS)
        self.level = min(self.level, self.capacity)

    def give_back(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)

    def hold_back(self, seconds: float) -> None:
        """After a 429: no quota for ``seconds``, then a little slack for the provider.

        The level is set, not lowered: every reservation made before is void (its owner
        reserves again, see ``Controller._step``), so keeping it would count it twice.
        """
        self.level = -self.rate * seconds - self.capacity / 2
