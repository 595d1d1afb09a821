"""``DeadlineMiddleware``: each request's bridge calls must finish within its deadline.

``BRIDGE["request_deadline"]`` seconds (25 by default, under gunicorn's default worker
``--timeout`` of 30 s; None for no deadline) bound every bridge call a view makes. A call
that cannot be admitted in time fails at once, unsent, with ``bridge.DeadlineExceeded``,
and the middleware answers it with a 503 JSON reply and ``Retry-After``, instead of the
worker being killed mid-request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core import checks
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.module_loading import import_string

import bridge
from bridge._integration import deadline_error, deadline_reply

from ._settings import request_deadline

__all__ = ["DeadlineMiddleware", "check_middleware"]

GetResponse = Callable[[HttpRequest], Any]


class DeadlineMiddleware:
    """Run each request under ``bridge.deadline(BRIDGE["request_deadline"])``.

    Add ``"bridge.django.DeadlineMiddleware"`` to ``MIDDLEWARE``. A view that raises
    ``bridge.DeadlineExceeded`` (or an SDK error wrapping one) gets a 503 JSON reply,
    ``{"error": ..., "retry_after": n}``, with a ``Retry-After: n`` header: the seconds
    admission expected to wait, when that was the reason. Works in sync and async stacks.
    A streaming response's body is produced after the view returns, outside the deadline.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.seconds = request_deadline()
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        if self.seconds is None:
            return self.get_response(request)
        with bridge.deadline(self.seconds):
            return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        respond: Callable[[HttpRequest], Awaitable[HttpResponse]] = self.get_response
        if self.seconds is None:
            return await respond(request)
        with bridge.deadline(self.seconds):
            return await respond(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A 503 with ``Retry-After`` for a missed deadline; anything else goes on."""
        error = deadline_error(exception)
        if error is None:
            return None
        body, retry_after = deadline_reply(error)
        response = JsonResponse(body, status=503)
        response["Retry-After"] = str(retry_after)
        return response


def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A warning when ``request_deadline`` is set but nothing applies it."""
    raw = getattr(settings, "BRIDGE", {})
    if not isinstance(raw, Mapping) or raw.get("request_deadline") is None:
        return []
    if any(_is_deadline_middleware(path) for path in getattr(settings, "MIDDLEWARE", None) or []):
        return []
    return [
        checks.Warning(
            "BRIDGE['request_deadline'] is set, but DeadlineMiddleware is not in MIDDLEWARE: "
            "no request runs under it.",
            hint='Add "bridge.django.DeadlineMiddleware" to MIDDLEWARE.',
            id="bridge.W001",
        )
    ]


def _is_deadline_middleware(path: object) -> bool:
    if not isinstance(path, str):
        return False
    try:
        found = import_string(path)
    except ImportError:
        return False  # Django reports a middleware it cannot import itself
    return isinstance(found, type) and issubclass(found, DeadlineMiddleware)
