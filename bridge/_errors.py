"""The exceptions the bridge raises.

Every error the bridge raises itself derives from :class:`BridgeError`; failures
inside your own coroutines reach you unchanged, with their own type::

    BridgeError
    ├── ReentrancyError      (also a RuntimeError)
    └── BridgeClosedError    (also a RuntimeError)

A call's ``timeout`` raises the builtin :class:`TimeoutError`, and bad arguments
raise the builtin :class:`TypeError` or :class:`ValueError`.
"""

from __future__ import annotations

__all__ = ["BridgeClosedError", "BridgeError", "BridgeWarning", "ReentrancyError"]


class BridgeError(Exception):
    """Root of every error raised by the bridge itself."""


class ReentrancyError(BridgeError, RuntimeError):
    """A blocking bridge method was called from the bridge's own event loop thread.

    Blocking there would deadlock the loop that has to do the work, so the call
    is refused: inside a coroutine, ``await`` the awaitable directly instead.
    """


class BridgeClosedError(BridgeError, RuntimeError):
    """The bridge was used after :meth:`Bridge.close`."""


class BridgeWarning(UserWarning):
    """Something works, but not the way you probably expect (for example under gevent)."""
