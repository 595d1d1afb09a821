"""Token buckets that lend: the pacing of requests and tokens inside one process."""

from __future__ import annotations

import math

__all__ = ["BUCKET_SECONDS", "LANES", "LANE_IDLE", "Bucket", "Limit"]

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


#: The lanes of a limit: interactive (a person waits) before batch (nobody waits on one).
LANES = ("interactive", "batch")
#: A lane that reserved nothing for this long is idle: the other gets the whole rate.
#: Interactive demand comes in bursts a person apart (a request every second or two):
#: were the lane idle between them, each burst would "wake" it and void the batch lane's
#: reservations again, and the batch would stall instead of running at its share.
LANE_IDLE = 5.0


class Limit:
    """One rate limit, shared by the interactive and the batch lane.

    Each lane has its own lending bucket, so an interactive request never waits behind
    the batch queue's debt. While both lanes are active, interactive traffic gets
    ``share`` of the rate and batch the rest; while one is idle, the other gets it all.
    When a lane wakes up, the other lane's rate drops, so its reservations (made at the
    higher rate) are void: :meth:`reserve` says so, and the caller has them made again.
    """

    __slots__ = ("_buckets", "_seen", "rate", "share")

    def __init__(self, per_minute: float, now: float, share: float, *, empty: bool = False) -> None:
        self.rate = per_minute / 60.0
        self.share = share
        level = 0.0 if empty else None
        self._buckets = {lane: Bucket(per_minute, now, level) for lane in LANES}
        self._seen = dict.fromkeys(LANES, -math.inf)

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate * BUCKET_SECONDS)

    def level_of(self, lane: str) -> float:
        """What ``lane``'s bucket holds (below zero: the debt of its queue)."""
        return self._buckets[lane].level

    def reserve(self, cost: float, now: float, lane: str) -> tuple[float, bool]:
        """Take ``cost`` in ``lane``; (seconds until covered, whether the other lane's
        reservations were just made void)."""
        other = _other(lane)
        woke = now - self._seen[lane] >= LANE_IDLE
        self._seen[lane] = now
        voided = woke and now - self._seen[other] < LANE_IDLE
        self._set_rates(now)
        if voided:
            self._buckets[other].level = min(self._buckets[other].level, 0.0)
        return self._buckets[lane].reserve(cost, now), voided

    def wait_for(self, cost: float, now: float, lane: str) -> float:
        """What :meth:`reserve` would say, without reserving."""
        bucket = self._buckets[lane]
        level = min(bucket.capacity, bucket.level + (now - bucket.stamp) * bucket.rate)
        return max(0.0, (cost - level) / bucket.rate)

    def set_rate(self, per_second: float, now: float) -> None:
        self.rate = per_second
        self._set_rates(now)

    def _set_rates(self, now: float) -> None:
        active = {lane: now - self._seen[lane] < LANE_IDLE for lane in LANES}
        both = all(active.values())
        for lane, bucket in self._buckets.items():
            part = (self.share if lane == "interactive" else 1.0 - self.share) if both else 1.0
            bucket.set_rate(self.rate * part, now)

    def give_back(self, amount: float, lane: str) -> None:
        self._buckets[lane].give_back(amount)

    def hold_back(self, seconds: float, now: float) -> None:
        """After a 429: every lane's reservations are void, and none has quota for a while."""
        for bucket in self._buckets.values():
            bucket.reserve(0, now)
            bucket.hold_back(seconds)

    def empty(self) -> None:
        """No quota left, no debt either (the reservations were voided)."""
        for bucket in self._buckets.values():
            bucket.level = 0.0

    def lower_to(self, level: float, now: float) -> None:
        """At most ``level`` left (the server's view); the batch lane takes the shortfall.

        The server's view counts both lanes' requests, the batch queue's above all: were
        it shared out, an interactive request would wait behind the batch's debt, which
        is what lanes exist to prevent. So while batch traffic runs, only its bucket is
        lowered (it yields); the interactive one is lowered only when it runs alone.
        """
        self._set_rates(now)
        lane = "batch" if now - self._seen["batch"] < LANE_IDLE else "interactive"
        bucket = self._buckets[lane]
        bucket.reserve(0, now)
        bucket.level = min(bucket.level, level)


def _other(lane: str) -> str:
    return "batch" if lane == "interactive" else "interactive"
