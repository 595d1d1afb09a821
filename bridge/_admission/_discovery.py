"""Finding the request rate a server accepts from its 429s alone.

Many gateways and proxies answer 429 with a ``retry-after`` and nothing else: no limit,
no remaining. Retrying each 429 on its own storms such a server, so the endpoint learns
a sending rate instead, in the manner of the AWS SDKs' "adaptive" retry mode: a token
bucket whose rate follows CUBIC.

- **Decrease.** A 429 for a request sent after the last decrease is a new congestion
  event: ``w_max`` becomes the rate the server took since the last event (requests sent,
  less those it refused, over the time since; at the first event, over the last second),
  and the rate drops to ``BETA * w_max``. 429s for requests sent before the decrease
  belong to the same event and cut nothing more, as TCP counts one loss per window. The
  rate actually sent is not used: a provider's bucket hides a second or so of excess, so
  by the time it refuses, the sending rate overstates what it takes.
- **Increase.** The rate then grows as CUBIC: quickly back towards ``w_max`` (in
  ``K`` seconds, whatever the scale), flat around it, then faster beyond it, probing for
  more. The growth is scale-free, so a 30-per-minute server and a 30,000-per-minute one
  are probed alike.
- **Forgetting.** Once the rate has grown to twice ``w_max`` with no 429, the limit is
  gone (or was a passing one): the endpoint goes unpaced until the next 429.

See docs/limits.md for why this, and not Google SRE's client-side throttling (which sheds
requests by failing them) or plain AIMD (whose linear growth is slow to recover).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

__all__ = ["BETA", "RateFinder"]

#: The share of the rate kept at a congestion event (CUBIC's and the AWS SDKs' 0.7).
BETA: Final = 0.7
#: Cubic growth per second cubed, relative to ``w_max``: back at ``w_max`` in
#: ``(0.3 / 0.02) ** (1/3)``, about 2.5 s.
GROWTH: Final = 0.02
#: The window over which the first event counts what the server let through.
WINDOW: Final = 1.0
#: Never pace slower than one request a minute.
MIN_RATE: Final = 1.0 / 60.0
_K: Final = ((1.0 - BETA) / GROWTH) ** (1.0 / 3.0)


class RateFinder:
    """The CUBIC rate state of one endpoint; the caller holds the lock and gives the time."""

    def __init__(self) -> None:
        self._w_max = 0.0
        self._event_at = -math.inf
        self._first = True
        self._sends: deque[float] = deque()
        self._sent_since = 0  # since the last event
        self._refused_since = 0

    @property
    def active(self) -> bool:
        """True between a 429 and the moment the found rate is forgotten."""
        return self._event_at > -math.inf

    def sent(self, now: float) -> None:
        """Count a request sent."""
        self._sent_since += 1
        self._sends.append(now)
        while self._sends and self._sends[0] < now - WINDOW:
            self._sends.popleft()

    def rejected(self, sent_at: float, now: float) -> bool:
        """A 429 answered a request sent at ``sent_at``; True if the rate was cut."""
        if sent_at <= self._event_at:
            if self._first:  # the first event's count was made before these came back
                self._w_max = max(MIN_RATE, self._w_max - 1.0 / WINDOW)
                return True
            return False
        self._refused_since += 1
        if self.active:
            span = max(WINDOW, now - self._event_at)
            taken = self._sent_since - self._refused_since
            self._first = False
        else:
            span = WINDOW
            taken = sum(1 for t in self._sends if t >= now - WINDOW) - 1
        self._w_max = max(MIN_RATE, taken / span)
        self._event_at = now
        self._sent_since = self._refused_since = 0
        return True

    def rate(self, now: float) -> float | None:
        """Requests per second to send at now, or None when there is no limit to keep."""
        if not self.active:
            return None
        elapsed = now - self._event_at
        rate = self._w_max * (1.0 + GROWTH * (elapsed - _K) ** 3)
        if rate >= 2.0 * self._w_max:
            self._event_at, self._first = -math.inf, True
            return None
        return max(MIN_RATE, rate)
