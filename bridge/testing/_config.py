"""The simulated server's configuration, shared by the CLI, :func:`serve` and the fixture."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from ._ratelimit import TOKEN_ACCOUNTING, TokenAccounting

__all__ = [
    "DEFAULT_BURST_SECONDS",
    "DEFAULT_HOST",
    "DEFAULT_SLOW_FIRST_BYTE",
    "FAULT_KINDS",
    "ServerConfig",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_BURST_SECONDS = 1.0
DEFAULT_SLOW_FIRST_BYTE = 5.0

#: Fault kinds besides injected statuses, in the order the RNG draw walks them.
FAULT_KINDS = ("reset", "hang", "slow_first_byte", "stream_cut", "stream_stall")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """How the simulated server behaves. Durations are in seconds, rates in [0, 1].

    Latency and faults:

    - ``latency`` (plus a uniform ``±jitter``) passes before each reply, before
      the first byte of a stream. ``chunk_delay`` spaces streamed chunks.
    - ``error_rates`` maps an HTTP status (400-599) to the probability of
      answering with it, with a provider-shaped error body.
    - ``reset_rate``, ``hang_rate``, ``slow_first_byte_rate`` (which waits
      ``slow_first_byte`` more seconds), ``stream_cut_rate`` and
      ``stream_stall_rate`` are the chances of the other faults. The two
      stream faults only hit streaming requests.
    - One draw of ``random.Random(seed)`` per admitted request picks at most
      one fault, so the probabilities must add up to 1 at most, and the same
      requests in the same order meet the same faults.

    Rate limits: ``rpm`` and ``tpm`` per API key (``None`` = unlimited), each a
    bucket holding ``burst_seconds`` of quota; ``itpm``/``otpm`` are Anthropic's
    separate input and output token limits. ``token_accounting`` says what a request
    costs against TPM: ``"sum"`` (prompt + ``max_tokens`` up front, no refund, as Azure
    OpenAI), ``"max"`` (the larger of the two, no refund, as OpenAI) or ``"usage"``
    (prompt + ``max_tokens`` up front, settled to the real usage at the end).

    Servers unlike the providers' own:

    - ``rate_limit_headers=False`` sends no ``x-ratelimit-*``/``anthropic-ratelimit-*``
      headers, and a 429 carries only ``retry-after`` in whole seconds, as many
      gateways and proxies do.
    - ``header_overrides`` replaces (or adds) response headers with the given values on
      a share ``header_override_rate`` of API responses (429s included), drawn from
      the seeded RNG: broken headers such as ``x-ratelimit-limit-requests: 0``.
    """

    host: str = DEFAULT_HOST
    port: int = 0
    latency: float = 0.0
    jitter: float = 0.0
    chunk_delay: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    burst_seconds: float = DEFAULT_BURST_SECONDS
    itpm: int | None = None
    otpm: int | None = None
    token_accounting: TokenAccounting = "sum"
    rate_limit_headers: bool = True
    header_overrides: Mapping[str, str] = field(default_factory=dict)
    header_override_rate: float = 1.0
    error_rates: Mapping[int, float] = field(default_factory=dict)
    reset_rate: float = 0.0
    hang_rate: float = 0.0
    slow_first_byte_rate: float = 0.0
    slow_first_byte: float = DEFAULT_SLOW_FIRST_BYTE
    stream_cut_rate: float = 0.0
    stream_stall_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        # A read-only copy: the config is frozen, and the caller's dict may change later.
        object.__setattr__(self, "error_rates", MappingProxyType(dict(self.error_rates)))
        object.__setattr__(
            self,
            "header_overrides",
            MappingProxyType({k.lower(): v for k, v in self.header_overrides.items()}),
        )
        _check_port(self.port)
        for name in ("latency", "jitter", "chunk_delay", "slow_first_byte"):
            _check_duration(name, getattr(self, name))
        for name in ("rpm", "tpm", "itpm", "otpm"):
            _check_limit(name, getattr(self, name))
        if self.token_accounting not in TOKEN_ACCOUNTING:
            raise ValueError(
                f"token_accounting must be one of {', '.join(TOKEN_ACCOUNTING)}; "
                f"got {self.token_accounting!r}"
            )
        _check_rate("header_override_rate", self.header_override_rate)
        for name, value in self.header_overrides.items():
            if not (isinstance(name, str) and name and isinstance(value, str)):
                raise ValueError(
                    f"header_overrides maps header names to string values; got {name!r}: {value!r}"
                )
        if not (math.isfinite(self.burst_seconds) and self.burst_seconds > 0):
            raise ValueError(f"burst_seconds must be > 0, got {self.burst_seconds!r}")
        self._check_faults()

    def _check_faults(self) -> None:
        for status, rate in self.error_rates.items():
            if not (isinstance(status, int) and 400 <= status <= 599):
                raise ValueError(
                    f"error_rates keys must be HTTP error statuses 400-599, got {status!r}"
                )
            _check_rate(f"error_rates[{status}]", rate)
        for kind in FAULT_KINDS:
            _check_rate(f"{kind}_rate", getattr(self, f"{kind}_rate"))
        total = sum(self.fault_rates().values())
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"fault probabilities add up to {total:g}; at most one fault "
                "hits a request, so lower them to add up to 1 or less"
            )

    def fault_rates(self) -> dict[str, float]:
        """Every fault's probability, keyed ``"status:500"`` or by kind, in draw order."""
        rates = {f"status:{s}": r for s, r in sorted(self.error_rates.items())}
        rates.update({kind: getattr(self, f"{kind}_rate") for kind in FAULT_KINDS})
        return rates

    def to_args(self) -> list[str]:
        """The ``python -m bridge.testing serve`` flags that recreate this config."""
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "error_rates":
                for status, rate in sorted(value.items()):
                    args += ["--error-rate", f"{status}={rate!r}"]
            elif f.name == "header_overrides":
                for name, text in sorted(value.items()):
                    args += ["--header-override", f"{name}={text}"]
            elif f.name == "rate_limit_headers":
                args += [] if value else ["--no-rate-limit-headers"]
            elif value is not None:
                args += [
                    f"--{f.name.replace('_', '-')}",
                    repr(value) if isinstance(value, float) else str(value),
                ]
        return args


def _check_port(port: int) -> None:
    if not (isinstance(port, int) and 0 <= port <= 65535):
        raise ValueError(f"port must be 0-65535 (0 picks a free port), got {port!r}")


def _check_duration(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")


def _check_limit(name: str, value: int | None) -> None:
    if value is not None and not (isinstance(value, int) and value > 0):
        raise ValueError(f"{name} must be a positive integer, or None for no limit; got {value!r}")


def _check_rate(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")
