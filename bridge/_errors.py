"""The exceptions the bridge raises.

Every error the bridge raises itself derives from :class:`BridgeError`; failures
inside your own coroutines reach you unchanged, with their own type::

    BridgeError
    ├── ReentrancyError      (also a RuntimeError)
    ├── DeadlineExceeded     (also a TimeoutError)
    ├── BridgeClosedError    (also a RuntimeError)
    ├── ForeignLoopError     (also a RuntimeError)
    ├── RateLimitStoreError  (also a ConnectionError)
    ├── JournalMismatchError (also a ValueError)
    ├── JournalLockedError   (also a RuntimeError)
    ├── JournalUnavailableError (also a ConnectionError)
    ├── MissingExtraError    (also a ModuleNotFoundError)
    └── RecordedError        (a failure replayed from a journal)

A call's ``timeout`` raises the builtin :class:`TimeoutError`, and bad arguments
raise the builtin :class:`TypeError` or :class:`ValueError`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BridgeClosedError",
    "BridgeError",
    "BridgeWarning",
    "DeadlineExceeded",
    "ForeignLoopError",
    "JournalLockedError",
    "JournalMismatchError",
    "JournalUnavailableError",
    "MissingExtraError",
    "RateLimitStoreError",
    "RecordedError",
    "ReentrancyError",
]


class BridgeError(Exception):
    """Root of every error raised by the bridge itself."""


class ReentrancyError(BridgeError, RuntimeError):
    """A blocking bridge method was called from the bridge's own event loop thread.

    Blocking there would deadlock the loop that has to do the work, so the call
    is refused: inside a coroutine, ``await`` the awaitable directly instead.
    """


class DeadlineExceeded(BridgeError, TimeoutError):  # noqa: N818 - named as callers say it
    """A bridge call cannot finish before the ``bridge.deadline()`` in force.

    Raised at once, without sending, when admission would wait past the deadline (the
    message says how long, and why: a 429 pause, the RPM or TPM limit, or the window of
    requests in flight), or when the deadline passes while a call runs. Catch it to
    answer "try again later" (a 503 with ``Retry-After``) instead of a worker timeout.

    ``retry_after`` holds the admission wait in seconds when that was the reason (a fair
    ``Retry-After``), and None when the deadline passed while the call ran.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments are lost by BaseException's pickling, and a Celery
        # result carries this error to the web process, whose 503 needs retry_after.
        return (_deadline_exceeded, (str(self), self.retry_after))


def _deadline_exceeded(message: str, retry_after: float | None) -> DeadlineExceeded:
    return DeadlineExceeded(message, retry_after=retry_after)


def surfaced(error: BaseException) -> BaseException:
    """``error``, or the :class:`DeadlineExceeded` an SDK wrapped in it.

    The SDKs turn any exception their transport raises into their own connection error
    (``openai.APIConnectionError`` from ``DeadlineExceeded``); the bridge's calls hand the
    caller the deadline error it can act on.
    """
    seen: BaseException | None = error
    for _ in range(4):  # an SDK wraps once or twice; more is not a wrapping
        if seen is None or isinstance(seen, DeadlineExceeded):
            return seen or error
        seen = seen.__cause__
    return error


class BridgeClosedError(BridgeError, RuntimeError):
    """The bridge was used after :meth:`Bridge.close`."""


class ForeignLoopError(BridgeError, RuntimeError):
    """A request from an event loop that is not a bridge's could not be sent on one.

    A client built by ``bridge.openai()`` (or another bridge factory) works on any loop: a
    request made on another loop is sent on the default bridge's loop, where its
    connections live. That cannot happen once the default bridge is closed (or when it
    closes while the request is in flight). Make a new default
    (``bridge.set_default(bridge.Bridge())``), or give the factory a transport you own
    (``transport=httpx2.AsyncHTTPTransport()``) to send on your loop, and close it yourself.
    """


class RateLimitStoreError(BridgeError, ConnectionError):
    """The shared rate-limit store (Redis) is unreachable and ``on_store_error="fail"``.

    Start the store, fix ``Limits(store=...)``, or pass ``on_store_error="local"`` to fall
    back to per-process limits (logged as a warning).
    """


class JournalMismatchError(BridgeError, ValueError):
    """A journal written by a different function or key scheme was passed to ``map``/``imap``.

    Results of one call are never mixed with another's: pass a new ``journal=`` path, or
    delete the old file to start over.
    """


class MissingExtraError(BridgeError, ModuleNotFoundError):
    """A feature needs an optional dependency that is not installed.

    The message names the extra that brings it (``pip install 'llm-sync-bridge[llm]'``);
    ``extra`` holds that extra's name (``None`` for a lone package) and ``name``, as for
    any ``ModuleNotFoundError``, the first missing module.
    """

    def __init__(self, message: str, *, name: str, extra: str | None) -> None:
        super().__init__(message, name=name)
        self.extra = extra


class JournalLockedError(BridgeError, RuntimeError):
    """Another run is writing this journal (its holder's pid, host and start are in the message).

    One journal has one writer, or both would send the same requests. Wait for that run to
    finish, or stop it; a lock left by a process that died is taken over by the next run.
    """


class JournalUnavailableError(BridgeError, ConnectionError):
    """A journal's database (PostgreSQL) cannot be reached, or was lost during a run.

    What was recorded before stays recorded: start the database (or fix the URL) and run
    the same call again to resume. The message names the journal without its password.
    """


class RecordedError(BridgeError):
    """A failure recorded in a journal by an earlier run, replayed instead of retried.

    ``type_name`` and ``message`` describe the original exception. Pass
    ``retry_failed=True`` to ``map``/``imap`` to attempt such items again.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(
            f"{type_name}: {message} (recorded by an earlier run; "
            "pass retry_failed=True to attempt it again)"
        )
        self.type_name = type_name
        self.message = message


class BridgeWarning(UserWarning):
    """Something works, but not the way you probably expect (for example under gevent)."""
