"""Which outcomes are final and which a new attempt may cure.

The rule is the transport's retry rule (``bridge.Retry``), applied once more at the
journal's level: a line or item whose last attempt ended in 408, 409, 429, a 5xx, a
timeout or a connection error is *retryable*, so a plain rerun attempts it again. Any
other failure (a 400, 401, 403, 404, 413 or 422; an exception raised by your own code) is
*final*: a rerun replays it, and only ``retry_failed=True`` attempts it again.

Exceptions are classified by duck typing, so the core never imports an SDK: the openai
and anthropic ``APIStatusError`` carry ``status_code``, httpx's ``HTTPStatusError`` a
``response.status_code``, and timeouts and connection errors are known by class name.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["RETRYABLE_STATUSES", "Status", "status_of_exception", "status_of_http"]

#: ``ok``: a result; ``retryable``: a failure a new attempt may cure; ``final``: not.
Status = Literal["ok", "retryable", "final"]

#: HTTP statuses that a new attempt may cure: the transport retries the same ones.
RETRYABLE_STATUSES: Final = frozenset({408, 409, 429, *range(500, 600)})

# Timeouts and connection failures in openai/anthropic (APITimeoutError derives from
# APIConnectionError), httpx/httpx2 and asyncio (a class of its own before Python 3.11).
_RETRYABLE_CLASS_NAMES: Final = frozenset(
    {
        "APIConnectionError",
        "TimeoutException",
        "NetworkError",
        "RemoteProtocolError",
        "TimeoutError",
        "ConnectionError",
    }
)


def status_of_http(code: int) -> Status:
    """``ok`` for a 2xx, ``retryable`` for 408/409/429/5xx, ``final`` for anything else."""
    if 200 <= code < 300:
        return "ok"
    return "retryable" if code in RETRYABLE_STATUSES else "final"


def status_of_exception(exc: BaseException) -> Status:
    """``retryable`` for a retryable HTTP status, a timeout or a connection error; else ``final``.

    Args:
        exc: any exception; SDK and httpx errors are recognised without importing them.
    """
    code = _status_code(exc)
    if code is not None:
        return "retryable" if code in RETRYABLE_STATUSES else "final"
    if any(cls.__name__ in _RETRYABLE_CLASS_NAMES for cls in type(exc).__mro__):
        return "retryable"
    return "final"


def _status_code(exc: BaseException) -> int | None:
    """The HTTP status an SDK or httpx error carries, if it carries one."""
    for holder in (exc, _safe_attribute(exc, "response")):
        code = _safe_attribute(holder, "status_code")
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    return None


def _safe_attribute(obj: object, name: str) -> object:
    # httpx's RequestError.request is a property that raises when unset; so may others be.
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - an attribute that cannot be read is an absent one
        return None
