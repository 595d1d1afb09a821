"""``Limits`` and ``Retry``: the admission-control settings, as small frozen value objects.

Both check their values at construction, so bad configuration fails where it is written,
not at the first request::

    limits = bridge.Limits(max_in_flight=50, rpm=1200)        # tpm learned from headers
    retry = bridge.Retry(attempts=6, backoff=0.5, max_wait=30)
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from .._extras import require
from ._tokens import TOKEN_ACCOUNTINGS, TokenAccounting

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_BACKOFF",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_WAIT",
    "LEARN",
    "Limits",
    "Retry",
    "limits_from_setting",
    "limits_setting_problems",
]


class _Learn(enum.Enum):
    """The "not passed" marker: learn this limit from the provider's rate-limit headers."""

    LEARN = "LEARN"

    def __repr__(self) -> str:
        return "LEARN"


#: ``rpm``/``tpm`` default: not configured, so learned from the provider's headers.
#: ``None`` means something else: no limit at all.
LEARN: Final = _Learn.LEARN

#: Requests in flight at once per endpoint when ``Limits`` names none.
DEFAULT_MAX_IN_FLIGHT = 64
#: The share of a limit kept for interactive traffic while batch traffic competes.
DEFAULT_RESERVE_INTERACTIVE = 0.3
#: Attempts per request, the first one included.
DEFAULT_ATTEMPTS = 6
#: First backoff ceiling in seconds; it doubles per attempt (full jitter: uniform in [0, ceiling]).
DEFAULT_BACKOFF = 0.5
#: The longest single wait between attempts, a server's ``retry-after`` included.
DEFAULT_MAX_WAIT = 60.0

_STORE_SCHEMES = ("redis", "rediss", "unix")
#: Keywords renamed since 0.1: the old name -> the new one.
_MOVED = {"concurrency": "max_in_flight"}


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-endpoint admission limits (an endpoint is a base URL plus an API key).

    Args:
        max_in_flight: requests in flight at once to this endpoint, across the whole
            process (default 64); not to be confused with a call's ``concurrency``
            (``map(..., concurrency=16)``), which bounds one call. While limits are still to
            be learned, a fresh endpoint opens with 24 and widens with each clean answer.
        rpm: requests per minute. Not passed: learned from the provider's rate-limit
            headers, or found from its 429s when it sends none. ``None``: no limit.
        tpm: tokens per minute, charged before sending as ``token_accounting`` says. Not
            passed: learned from headers. ``None``: no limit.
        input_tpm, output_tpm: Anthropic's separate input and output tokens per minute
            (the prompt, and ``max_tokens`` settled to the real output). Not passed:
            learned from ``anthropic-ratelimit-*`` headers (``tpm=None`` makes them
            ``None`` too, unless they are passed). ``None``: no limit.
        token_accounting: what a request costs against ``tpm``, as the provider counts
            it: ``"max"`` (the larger of prompt and ``max_tokens``; OpenAI), ``"sum"``
            (both; Azure OpenAI), ``"usage"`` (both, settled to the real usage), or
            ``"auto"`` (default): by host, ``"sum"`` for servers it does not know.
        reserve_interactive: the share of the rate kept for the interactive lane while both
            lanes have demand (default 0.3): batch traffic yields it, and takes it back
            within 5 seconds of the interactive demand being gone. See ``bridge.priority``.
        store: ``"redis://host:6379/0"`` keeps the RPM/TPM state in Redis, shared by every
            process that uses the same endpoint. ``None``: this process only.
        on_store_error: ``"local"`` (default) falls back to this process's own limits, with
            a warning, when the store is unreachable; ``"fail"`` raises RateLimitStoreError.

    Raises:
        ValueError: a limit that is not a positive whole number, or an unknown store scheme.
        TypeError: an unknown keyword; ``concurrency`` names the new ``max_in_flight``.
    """

    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    rpm: int | _Learn | None = LEARN
    tpm: int | _Learn | None = LEARN
    input_tpm: int | _Learn | None = LEARN
    output_tpm: int | _Learn | None = LEARN
    token_accounting: TokenAccounting = "auto"
    reserve_interactive: float = DEFAULT_RESERVE_INTERACTIVE
    store: str | None = field(default=None, repr=False)
    on_store_error: Literal["local", "fail"] = "local"

    def __new__(cls, *args: Any, **kwargs: Any) -> Limits:
        # Before the generated __init__, so a keyword that moved gets a message naming the
        # new one instead of "unexpected keyword argument".
        for old, new in _MOVED.items():
            if old in kwargs:
                raise TypeError(
                    f"Limits({old}=...) is now Limits({new}=...): it caps the requests in "
                    "flight to one endpoint across the process (a call's own bound stays "
                    "map(..., concurrency=...))"
                )
        return super().__new__(cls)

    def __post_init__(self) -> None:
        _check_positive_int("max_in_flight", self.max_in_flight, allow_none=False)
        _check_positive_int("rpm", self.rpm, allow_none=True)
        for name in ("tpm", "input_tpm", "output_tpm"):
            _check_positive_int(name, getattr(self, name), allow_none=True)
            if self.tpm is None and getattr(self, name) is LEARN:
                # "No token limit" covers Anthropic's split ones too, unless they are named.
                object.__setattr__(self, name, None)
        share = self.reserve_interactive
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
            raise ValueError(
                f"reserve_interactive must be a share between 0 and 1 (say 0.3), got {share!r}"
            )
        if self.token_accounting not in TOKEN_ACCOUNTINGS:
            raise ValueError(
                f"token_accounting must be one of {', '.join(map(repr, TOKEN_ACCOUNTINGS))}, "
                f"got {self.token_accounting!r}"
            )
        if self.on_store_error not in ("local", "fail"):
            raise ValueError(
                f"on_store_error must be 'local' or 'fail', got {self.on_store_error!r}"
            )
        if self.store is not None:
            _check_store_url(self.store)

    def __repr__(self) -> str:
        # The store URL may hold a password, so only its scheme and host are shown.
        store = "" if self.store is None else f", store={_redacted(self.store)!r}"
        tokens = "".join(
            f", {name}={getattr(self, name)!r}"
            for name in ("input_tpm", "output_tpm")
            if getattr(self, name) not in (LEARN, None if self.tpm is None else LEARN)
        )
        policy = self.token_accounting
        accounting = "" if policy == "auto" else f", token_accounting={policy!r}"
        if self.reserve_interactive != DEFAULT_RESERVE_INTERACTIVE:
            accounting += f", reserve_interactive={self.reserve_interactive!r}"
        return (
            f"Limits(max_in_flight={self.max_in_flight}, rpm={self.rpm!r}, tpm={self.tpm!r}"
            f"{tokens}{accounting}{store}, on_store_error={self.on_store_error!r})"
        )

    @property
    def learns(self) -> bool:
        """True when a rate limit is to be learned from headers (or found from 429s)."""
        return LEARN in (self.rpm, self.tpm, self.input_tpm, self.output_tpm)


@dataclass(frozen=True, kw_only=True)
class Retry:
    """How failed requests are retried, in the transport, before the SDK sees them.

    Retried: 408, 409, 429, 5xx, timeouts and connection errors. Never retried: any other
    4xx (400, 401, 403, 404, 422...). A response already handed to the SDK is never
    retried, so a stream that has begun yielding tokens is never restarted.

    Args:
        attempts: tries per request, the first one included (1 turns retries off).
        backoff: seconds; the wait before retry *n* is uniform in ``[0, backoff * 2**(n-1)]``
            (exponential backoff with full jitter), at most ``max_wait``.
        max_wait: the longest single wait. A server's ``retry-after``/``retry-after-ms``
            replaces the backoff, capped by this too.

    Raises:
        ValueError: ``attempts`` below 1, or a negative or non-finite wait.
    """

    attempts: int = DEFAULT_ATTEMPTS
    backoff: float = DEFAULT_BACKOFF
    max_wait: float = DEFAULT_MAX_WAIT

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ValueError(  # noqa: TRY004 - one error type for any bad setting, as for rpm
                f"attempts must be a whole number of at least 1, got {self.attempts!r}"
            )
        if self.attempts < 1:
            raise ValueError(
                f"attempts must be at least 1 (1 means no retries), got {self.attempts!r}"
            )
        for name in ("backoff", "max_wait"):
            _check_seconds(name, getattr(self, name))


def _check_positive_int(name: str, value: object, *, allow_none: bool) -> None:
    if value is LEARN or (allow_none and value is None):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        tail = ", or None for no limit" if allow_none else ""
        raise ValueError(f"{name} must be positive{tail}; got {value!r}")


def _check_seconds(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")


def _check_store_url(url: object) -> None:
    if not isinstance(url, str):
        raise ValueError(  # noqa: TRY004 - one error type for any bad setting
            f"store must be a URL string such as 'redis://host:6379/0', got {url!r}"
        )
    scheme = urlsplit(url).scheme
    if scheme not in _STORE_SCHEMES:
        raise ValueError(
            f"store URL scheme {scheme!r} is not supported; use redis://host:port/db, "
            "rediss:// for TLS, or unix:///path/to/redis.sock"
        )
    require("Limits(store=...)", "redis", "redis")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def limits_from_setting(value: object, store: str | None) -> Limits:
    """A framework setting's limits (a dict of ``Limits`` keywords, or a ``Limits``).

    ``store``, the integration's shared store setting, applies to every endpoint that does
    not name a store of its own. Raises TypeError or ValueError saying what is wrong.
    """
    if isinstance(value, Limits):
        limits = value
    elif isinstance(value, Mapping):
        limits = Limits(**value)
    else:
        raise TypeError(f"expected a dict or a bridge.Limits, got {type(value).__name__}")
    return limits if limits.store is not None or store is None else replace(limits, store=store)


def limits_setting_problems(limits: object, name: str) -> list[str]:
    """Everything wrong with a framework's per-endpoint limits setting called ``name``
    (``BRIDGE_LIMITS``, ``bridge_limits``), each saying what to write instead."""
    hint = f'use {name} = {{"https://api.openai.com/v1": {{"rpm": 500, "max_in_flight": 20}}}}'
    if not isinstance(limits, Mapping):
        return [f"{name} must map base URLs to limits, got {type(limits).__name__}: {hint}."]
    found = []
    for url, value in limits.items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            found.append(f"{name} key {url!r} is not a base URL: {hint}.")
            continue
        try:
            limits_from_setting(value, None)
        except (TypeError, ValueError) as exc:
            found.append(
                f"{name}[{url!r}] is invalid ({exc}): pass bridge.Limits keywords "
                "(max_in_flight, rpm, tpm, store, on_store_error) or a bridge.Limits."
            )
    return found
