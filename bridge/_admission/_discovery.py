"""Finding the request rate a server accepts from its 429s alone.

Many gateways and proxies answer 429 with a ``retry-after`` and nothing else: no limit,
no remaining. Retrying each 429 on its own storms such a server, so the endpoint learns
a sending rate instead, in the manner of the AWS SDKs' "adaptive" retry mode: a token
bucket whose rate follows CUBIC.

- **Decrease.** A 429 for a request sent after the last decrease is a new congestion
  event: ``w_max`` becomes the rate the server took since the last event (requests sent,
  less those it refused, over the time since plus one second: the quota the server's
  bucket held at the start), and the rate drops to ``BETA * w_max``. 429s for requests
  sent before the decrease belong to the same event and cut nothing more, as TCP counts
  one loss per window. The rate actually sent is not used: a provider's bucket hides a
  second or so of excess, so by the time it refuses, the sending rate overstates what it
  takes.
- **Increase.** The rate then grows as CUBIC: quickly back towards ``w_max`` (in
  ``K`` seconds, whatever the scale), flat around it, then faster beyond it, probing for
  more. The growth is scale-free, so a 30-per-minute server and a 30,000-per-minute one
  are probed alike.
- **Holding.** The rate grows to twice ``w_max`` at most and stays there while the
  endpoint is idle, so a burst after a quiet minute is paced, not a storm. Only while
  requests are actually sent near that ceiling without a 429 does it move up (the
  ceiling becomes the new ``w_max``), so a limit that was raised is found again.

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
#: The rate grows to this multiple of ``w_max`` without a 429, and is held there.
CEILING: Final = 2.0
#: Never pace slower than one request a minute.
MIN_RATE: Final = 1.0 / 60.0
_K: Final = ((1.0 - BETA) / GROWTH) ** (1.0 / 3.0)


class RateFinder:
    """The CUBIC rate state of one endpoint; the caller holds the lock and gives the time."""

    def __init__(self) -> None:
        self._w_max = 0.0
        self._event_at = -math.inf
        self._since = math.inf  # the start of what the next cut measures
        self._span = WINDOW  # what the last cut divided by
        self._first = True
        self._sends: deque[float] = deque()
        self._sent_since = 0
        self._refused_since = 0

    @property
    def active(self) -> bool:
        """True once a 429 has set a rate (it is then held, never forgotten)."""
        return self._event_at > -math.inf

    def sent(self, now: float) -> None:
        """Count a request sent."""
        self._since = min(self._since, now)
        self._sent_since += 1
        self._sends.append(now)
        self._recent(now)

    def _recent(self, now: float) -> int:
        """Requests sent in the last second."""
        while self._sends and self._sends[0] < now - WINDOW:
            self._sends.popleft()
        return len(self._sends)

    def rejected(self, sent_at: float, now: float) -> bool:
        """A 429 answered a request sent at ``sent_at``; True if the rate was cut."""
        if sent_at <= self._event_at:
            if self._first:  # the first cut's count was made before these came back
                self._w_max = max(MIN_RATE, self._w_max - 1.0 / self._span)
                return True
            return False
        self._refused_since += 1
        # What the server took, over the time it took it plus the second of quota its
        # bucket held at the start: an opening burst (or the quota saved up while the
        # rate recovered) is not mistaken for a rate.
        self._span = max(0.0, now - self._since) + WINDOW
        self._w_max = max(MIN_RATE, (self._sent_since - self._refused_since) / self._span)
        self._first = not self.active
        self._event_at = self._since = now
        self._sent_since = self._refused_since = 0
        return True

    def rate(self, now: float) -> float | None:
        """Requests per second to send at now, or None before the first 429."""
        if not self.active:
            return None
        rate = self._w_max * (1.0 + GROWTH * (now - self._event_at - _K) ** 3)
        if rate < CEILING * self._w_max:
            return max(MIN_RATE, rate)
        if self._recent(now) >= 0.75 * CEILING * self._w_max:
            # Sending near the ceiling and still no 429: the limit is higher; probe on
            # from here, as if the ceiling had been the last good rate.
            self._w_max *= CEILING
            self._event_at = now - _K
        return CEILING * self._w_max
