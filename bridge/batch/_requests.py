"""The input file: one request per line, each line parsed on its own.

A line that cannot be sent (invalid UTF-8, invalid JSON, not an object, not a POST)
becomes a request with an ``error`` that names its line number; the other lines run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["DEFAULT_URL", "KEY_SCHEME", "Request", "parse_line", "read_requests", "request_key"]

DEFAULT_URL: Final = "/v1/chat/completions"
#: Names how :func:`request_key` makes keys; change it whenever that changes.
KEY_SCHEME: Final = "batch-request-sha256-v2"


@dataclass(frozen=True)
class Request:
    """One input line: what to send, or why it cannot be sent."""

    line: int
    custom_id: str
    url: str
    body: dict[str, Any] | None
    error: str | None = None


def read_requests(path: Path) -> Iterator[Request]:
    """Every non-blank line of ``path``, parsed; read lazily, as bytes."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            request = decode_line(number, raw)
            if request is not None:
                yield request


def decode_line(number: int, raw: bytes) -> Request | None:
    """The request on line ``number`` (None for a blank line); bad bytes make an error line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        why = f"line {number}: invalid UTF-8 at byte {exc.start + 1} of the line ({exc.reason})"
        return Request(number, f"line-{number}", DEFAULT_URL, None, why)
    if number == 1:
        text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    return parse_line(number, text) if text.strip() else None


def parse_line(number: int, text: str) -> Request:
    """The request in ``text``; a malformed line becomes a Request with ``error``."""
    fallback = f"line-{number}"
    try:
        data = json.loads(text)
    except ValueError as exc:
        return Request(number, fallback, DEFAULT_URL, None, f"line {number}: invalid JSON: {exc}")
    if not isinstance(data, dict):
        return Request(number, fallback, DEFAULT_URL, None, f"line {number}: not a JSON object")
    if "body" not in data:  # a bare request body, as the cookbook processor takes
        return Request(number, fallback, DEFAULT_URL, data)
    body, method = data["body"], str(data.get("method", "POST")).upper()
    custom_id = str(data.get("custom_id", fallback))
    if not isinstance(body, dict) or method != "POST":
        why = "body is not a JSON object" if method == "POST" else f"method {method} (not POST)"
        return Request(number, custom_id, DEFAULT_URL, None, f"line {number}: {why}")
    return Request(number, custom_id, str(data.get("url", DEFAULT_URL)), body)


def request_key(request: Request) -> str:
    """The journal key: what the line asks for, so an edited line is sent again.

    A line with a ``custom_id`` keeps its key when lines are added above it; a line
    without one is named by its line number (``line-N``), which is part of the key.
    """
    content = [request.custom_id, request.url, request.body, request.error]
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
