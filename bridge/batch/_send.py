"""Sending one request: an output line and its status, never an exception."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge._integration import Status, status_of_exception, status_of_http

from ._requests import Request

__all__ = ["Line", "Sender", "Tokens"]

#: An output line and its status: ``ok``, ``retryable`` (a rerun sends it again) or ``final``.
Line = tuple[dict[str, Any], Status]


@dataclass
class Tokens:
    """Token counts from responses' ``usage`` (OpenAI's or Anthropic's names)."""

    input: int = 0
    output: int = 0

    def add(self, body: object) -> None:
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            return
        self.input += _count(usage, "prompt_tokens", "input_tokens")
        self.output += _count(usage, "completion_tokens", "output_tokens")


def _count(usage: dict[str, Any], *names: str) -> int:
    # From the network: only a plain non-negative whole number counts.
    for name in names:
        value = usage.get(name)
        if type(value) is int and value >= 0:
            return value
    return 0


@dataclass
class Sender:
    """POSTs one request through a client under admission control; counts what it sent."""

    client: Any
    base_url: str
    posted: int = 0
    tokens: Tokens = field(default_factory=Tokens)

    async def __call__(self, request: Request) -> Line:
        if request.error is not None:
            error = {"code": "invalid_request", "message": request.error}
            return _line(request, None, error), "final"
        self.posted += 1
        try:
            response = await self.client.post(self._url(request.url), json=request.body)
        except Exception as exc:  # noqa: BLE001 - every failure becomes that line's error
            error = {"code": type(exc).__name__, "message": str(exc)}
            return _line(request, None, error), status_of_exception(exc)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        status = status_of_http(response.status_code)
        if status == "ok":
            self.tokens.add(body)
        return _line(request, {"status_code": response.status_code, "body": body}, None), status

    def _url(self, path: str) -> str:
        # Batch files name "/v1/chat/completions"; base URLs usually end in /v1 already.
        base = self.base_url.rstrip("/")
        if base.endswith("/v1") and path.startswith("/v1/"):
            path = path[3:]
        return base + path


def _line(request: Request, response: Any, error: Any) -> dict[str, Any]:
    return {"custom_id": request.custom_id, "response": response, "error": error}
