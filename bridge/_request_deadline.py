"""What the web integrations share about request deadlines: the default, its check, the 503.

A request served by a sync worker must answer before the server gives up on it (gunicorn
kills a sync worker whose request runs past ``--timeout``, 30 s by default). Under a
deadline a little shorter, a bridge call that cannot finish in time fails at once, and
the integration answers 503 with ``Retry-After`` instead of losing the worker.
"""

from __future__ import annotations

import math
from typing import Final

from ._errors import DeadlineExceeded, surfaced

__all__ = [
    "DEFAULT_REQUEST_DEADLINE",
    "DEFAULT_RETRY_AFTER",
    "deadline_error",
    "deadline_problem",
    "deadline_reply",
]

#: Seconds: under gunicorn's default worker ``--timeout`` of 30 s, with room to answer.
DEFAULT_REQUEST_DEADLINE: Final = 25.0
#: ``Retry-After`` when the error does not say how long admission would wait.
DEFAULT_RETRY_AFTER: Final = 5


def deadline_problem(value: object) -> str | None:
    """What is wrong with a request deadline setting (seconds or None), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number of seconds or None, got {type(value).__name__} {value!r}"
    if not (math.isfinite(value) and value > 0):
        return f"must be a positive, finite number of seconds or None, got {value!r}"
    return None


def deadline_error(error: BaseException) -> DeadlineExceeded | None:
    """The :class:`DeadlineExceeded` behind ``error`` (an SDK may have wrapped it), or None."""
    found = surfaced(error)
    return found if isinstance(found, DeadlineExceeded) else None


def deadline_reply(error: DeadlineExceeded) -> tuple[dict[str, object], int]:
    """The JSON body of the 503 for ``error``, and its ``Retry-After`` in whole seconds."""
    wait = error.retry_after
    retry_after = DEFAULT_RETRY_AFTER if wait is None else max(1, math.ceil(wait))
    body: dict[str, object] = {
        "error": (
            "the LLM service cannot answer within this request's deadline; "
            f"try again in {retry_after} s"
        ),
        "retry_after": retry_after,
    }
    return body, retry_after
