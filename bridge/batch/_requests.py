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
    except RecursionError:
        why = f"line {number}: JSON nested too deeply to read"
        return Request(number, fallback, DEFAULT_URL, None, why)
    if not isinstance(data, dict):
        return Request(number, fallback, DEFAULT_URL, None, f"line {number}: not a JSON object")
    if "body" not in data:  # a bare request body, as the cookbook processor takes
        return Request(number, fallback, DEFAULT_URL, data)
    return _batch_line(number, data, str(data.get("custom_id", fallback)))


def _batch_line(number: int, data: dict[str, Any], custom_id: str) -> Request:
    """A Batch API line: ``custom_id``, ``method``, ``url`` and ``body``."""
    body, method, url = data["body"], str(data.get("method", "POST")).upper(), data.get("url")
    if method != "POST":
        why = f"method {method} (not POST)"
    elif not isinstance(body, dict):
        why = "body is not a JSON object"
    elif url is not None and not _is_path(url):
        # Appended to the base URL with the API key in a header: "@evil.example/x" or
        # ".evil.example" would send that key to another host.
        why = f"url must be a path on the base URL such as {DEFAULT_URL}, got {url!r}"[:200]
    else:
        return Request(number, custom_id, url or DEFAULT_URL, body)
    return Request(number, custom_id, DEFAULT_URL, None, f"line {number}: {why}")


def _is_path(url: object) -> bool:
    return (
        isinstance(url, str)
        and url.startswith("/")
        and not url.startswith("//")
        and not any(c in url for c in "@\\?#")
        and url.isprintable()
        and " " not in url
    )


def request_key(request: Request) -> str:
    """The journal key: what the line asks for, so an edited line is sent again.

    A line with a ``custom_id`` keeps its key when lines are added above it; a line
    without one is named by its line number (``line-N``), which is part of the key.
    """
    content = [request.custom_id, request.url, request.body, request.error]
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
