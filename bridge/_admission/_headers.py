"""Rate-limit headers, read as the untrusted input they are.

A proxy, a gateway or a buggy server can send anything: a limit of ``0`` or ``1e-9``, a
negative or absurd remaining, ``nan``, a date in a ``retry-after-ms``. Nothing read here
may stall an endpoint or break it: every value is checked, a bad one is dropped (or
clamped, where the intent is clear), and the caller is told once so it can log it once.

OpenAI sends ``x-ratelimit-{limit,remaining}-{requests,tokens}``; Anthropic sends
``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining}``.
Both send ``retry-after`` (seconds or an HTTP date) on 429s, OpenAI also ``retry-after-ms``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["KINDS", "Complain", "Reading", "read_limits", "retry_after"]

#: The quotas a provider may report, as the controller names its buckets.
KINDS: Final = ("requests", "tokens", "input_tokens", "output_tokens")
#: Per-minute limits below these are not believed: one request a minute is a real free
#: tier, but a hundred tokens a minute would not fit one request.
MIN_LIMITS: Final = {
    "requests": 1.0,
    "tokens": 100.0,
    "input_tokens": 100.0,
    "output_tokens": 100.0,
}
#: Per-minute limits above these are not believed (OpenAI's largest tiers are far below).
MAX_LIMITS: Final = {
    "requests": 1e8,
    "tokens": 1e11,
    "input_tokens": 1e11,
    "output_tokens": 1e11,
}

#: ``complain(header, problem)``: report a bad header (the caller logs each once).
Complain = Callable[[str, str], None]

_NAMES: Final = {
    kind: (
        (f"x-ratelimit-limit-{kind}", f"x-ratelimit-remaining-{kind}"),
        (
            f"anthropic-ratelimit-{kind.replace('_', '-')}-limit",
            f"anthropic-ratelimit-{kind.replace('_', '-')}-remaining",
        ),
    )
    for kind in KINDS
}


@dataclass(frozen=True, slots=True)
class Reading:
    """One quota the server reported: its per-minute limit and what remains now."""

    kind: str
    limit: float
    remaining: float


def read_limits(headers: Mapping[str, str], complain: Complain) -> list[Reading]:
    """Every quota in ``headers`` whose values make sense; bad ones are reported, not used.

    A limit must be a finite number within :data:`MIN_LIMITS` and :data:`MAX_LIMITS`; a
    remaining below 0 is
    taken as 0, one above the limit as the limit.
    """
    readings = []
    for kind in KINDS:
        for limit_name, remaining_name in _NAMES[kind]:
            texts = headers.get(limit_name), headers.get(remaining_name)
            if texts == (None, None):
                continue
            reading = _reading(kind, (limit_name, remaining_name), texts, complain)
            if reading is not None:
                readings.append(reading)
            break
    return readings


def _reading(
    kind: str,
    names: tuple[str, str],
    texts: tuple[str | None, str | None],
    complain: Complain,
) -> Reading | None:
    (limit_name, remaining_name), (limit_text, remaining_text) = names, texts
    limit = _number(limit_name, limit_text, complain)
    remaining = _number(remaining_name, remaining_text, complain)
    if limit is None or remaining is None:
        return None
    if not MIN_LIMITS[kind] <= limit <= MAX_LIMITS[kind]:
        complain(limit_name, f"a limit of {limit_text!r} per minute is not believable; ignored")
        return None
    if not 0 <= remaining <= limit:
        complain(remaining_name, f"{remaining_text!r} is outside 0..{limit_text}; clamped")
        remaining = min(max(remaining, 0.0), limit)
    return Reading(kind, limit, remaining)


def _number(name: str, text: str | None, complain: Complain) -> float | None:
    if text is None:
        complain(name, "missing while its pair is present; both ignored")
        return None
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        complain(name, f"{text[:40]!r} is not a finite number; ignored")
        return None
    return number


def retry_after(headers: Mapping[str, str], complain: Complain) -> float | None:
    """The server's wait in seconds (``retry-after-ms`` first), or None if it gave none.

    A negative, non-finite or unparseable value is reported and ignored; a date in the
    past means 0. Capping a huge value is the caller's business (its ``max_wait``).
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        number = _wait("retry-after-ms", millis, complain)
        if number is not None:
            return number / 1000.0
    seconds = headers.get("retry-after")
    if seconds is None:
        return None
    try:
        float(seconds)
    except ValueError:
        return _http_date_wait(seconds, complain)
    return _wait("retry-after", seconds, complain)


def _wait(name: str, text: str, complain: Complain) -> float | None:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= 0):
        complain(name, f"{text[:40]!r} is not a wait in seconds; ignored")
        return None
    return number


def _http_date_wait(value: str, complain: Complain) -> float | None:
    from email.utils import parsedate_to_datetime  # noqa: PLC0415 - rare path

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        complain("retry-after", f"{value[:40]!r} is neither seconds nor an HTTP date; ignored")
        return None
