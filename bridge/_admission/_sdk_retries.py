"""The SDKs' own retries, on a bridge client: never sent on top of the bridge's.

The openai and anthropic SDKs retry by themselves (``max_retries``, 2 by default), and
frameworks set it back: LangChain's ``ChatOpenAI`` defaults to 2, LiteLLM resets the
``max_retries`` of a client it is given to 2. The bridge's transport already retries each
request as its ``Retry`` allows, so every SDK retry would multiply the attempts. The SDKs
mark their requests with ``x-stainless-retry-count`` (0 for a call's first attempt), which
the transport sees, and the bridge stays the only one that retries:

- a failed response handed back to such an SDK carries ``x-should-retry: false``, which
  the SDKs obey: they raise their usual error at once, after the bridge's attempts;
- an SDK retry that comes anyway (the SDKs retry connection errors and timeouts whatever
  the headers say) is not sent: it gets the outcome it retries again, and a
  ``BridgeWarning``, once per process, names the fix (``max_retries=0``).

What a call was last handed back lives in a context variable: an SDK retries within the
task (or thread) that made the call, and a new call (attempt 0) starts afresh.
"""

from __future__ import annotations

import warnings
from contextvars import ContextVar
from dataclasses import dataclass

import httpx2

from .._errors import BridgeWarning

__all__ = ["answered", "failed", "replay", "sdk_attempt"]

_HEADER = b"x-stainless-retry-count"
# The content kept is decoded, and its length is set anew when it is answered again.
_DROPPED = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})

WARNING = (
    "an SDK retried a request on a bridge client after the bridge had made every attempt "
    "its Retry allows; the retry was not sent, and the SDK got the same outcome again. "
    "Turn the SDK's own retries off with max_retries=0 on its client (LangChain: "
    "ChatOpenAI(max_retries=0); LiteLLM: max_retries=0 in the call); the bridge's "
    "retry=bridge.Retry(attempts=...) sets the attempts"
)


@dataclass(frozen=True, eq=False)
class _HandedBack:
    """The failure a call's last attempt ended with: an error, or a response already read."""

    error: Exception | None = None
    status: int = 0
    headers: tuple[tuple[bytes, bytes], ...] = ()
    content: bytes = b""


_handed_back: ContextVar[_HandedBack | None] = ContextVar("bridge_handed_back", default=None)
_warned = False


def sdk_attempt(request: httpx2.Request) -> int | None:
    """The SDK's own attempt number (0: the first), or None for a request no SDK marked."""
    for name, value in request.headers.raw:
        if name.lower() == _HEADER:
            try:
                return int(value)
            except ValueError:  # not the SDK's: treat as unmarked
                return None
    return None


def replay(request: httpx2.Request, attempt: int) -> httpx2.Response | None:
    """What an SDK retry gets instead of being sent; None when it should be sent.

    Raises:
        Exception: the error the retried attempt ended with.
    """
    last = _handed_back.get()
    if attempt == 0 or last is None:
        if last is not None:
            _handed_back.set(None)  # a new call: the last one's failure is over
        return None
    _warn_once()
    if last.error is not None:
        raise last.error
    return httpx2.Response(
        last.status, headers=list(last.headers), content=last.content, request=request
    )


def answered(response: httpx2.Response) -> None:
    """Tell the SDK not to retry a failed response, and remember it for a retry that
    comes anyway."""
    if response.status_code < 400:
        return
    response.headers["x-should-retry"] = "false"
    if response.is_closed:  # read here (not a stream): it can be answered again
        _handed_back.set(
            _HandedBack(
                status=response.status_code,
                headers=tuple(
                    (name, value)
                    for name, value in response.headers.raw
                    if name.lower() not in _DROPPED
                ),
                content=response.content,
            )
        )


def failed(error: Exception) -> None:
    """Remember the error a call's attempt ended with, for the SDK retry that follows."""
    _handed_back.set(_HandedBack(error=error))


def _warn_once() -> None:
    global _warned  # noqa: PLW0603 - one warning per process
    if not _warned:
        _warned = True
        warnings.warn(WARNING, BridgeWarning, stacklevel=2)
