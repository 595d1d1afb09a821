"""Checking a summarize request; every problem becomes a JSON error with a message.

The body is untrusted: whatever it holds (too big, not UTF-8, not JSON, nested 100,000
deep, a 5,000-digit number, the wrong shape) the answer is a 4xx with ``{"error": ...}``.
Only ``application/json`` bodies are read: a browser on another site can POST
``text/plain`` without asking first (a CORS "simple request"), but not JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from flask import Request, current_app
from werkzeug.exceptions import RequestEntityTooLarge

MODES = ("bridge", "sequential")
EXPECTED = "send {'documents': [...]}"


class InvalidRequestError(ValueError):
    """The request is not a valid summarize request; the message says why."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        #: 400, 413 (body too large) or 415 (not application/json).
        self.status = status


@dataclass(frozen=True)
class SummarizeRequest:
    documents: list[str]
    mode: str


def parse_request(request: Request) -> SummarizeRequest:
    """The summarize request ``request`` carries, or InvalidRequestError."""
    if request.mimetype != "application/json":
        got = repr(request.mimetype) if request.mimetype else "none"
        raise InvalidRequestError(
            f"send the body with Content-Type: application/json (got {got})", status=415
        )
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:  # MAX_CONTENT_LENGTH, checked before the body is read
        raise InvalidRequestError(
            f"the body is over {current_app.config['MAX_CONTENT_LENGTH']:,} bytes; send "
            "fewer or shorter documents",
            status=413,
        ) from None
    return parse(body)


def parse(body: bytes) -> SummarizeRequest:
    """The request in ``body``, or InvalidRequestError saying what to send instead."""
    data = read_json(body)
    if not isinstance(data, dict):
        raise InvalidRequestError(f"the body must be a JSON object: {EXPECTED}")
    mode = data.get("mode", "bridge")
    if mode not in MODES:
        raise InvalidRequestError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return SummarizeRequest(check_documents(data.get("documents")), mode)


def read_json(body: bytes) -> object:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"the body is not UTF-8 ({exc}); {EXPECTED}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"the body is not JSON ({exc}); {EXPECTED}") from None
    except RecursionError:
        raise InvalidRequestError(f"the body's JSON nests too deeply; {EXPECTED}") from None
    except ValueError:  # Python refuses to convert integers of over 4,300 digits
        raise InvalidRequestError(f"the body holds a number too long to read; {EXPECTED}") from None


def check_documents(documents: object) -> list[str]:
    limit = current_app.config["SUMMARIZE_MAX_DOCUMENTS"]
    size = current_app.config["SUMMARIZE_MAX_CHARS"]
    if not isinstance(documents, list) or not documents:
        raise InvalidRequestError("'documents' must be a non-empty list of strings")
    if len(documents) > limit:
        raise InvalidRequestError(f"at most {limit} documents per request, got {len(documents)}")
    for index, document in enumerate(documents):
        if not isinstance(document, str):
            raise InvalidRequestError(
                f"documents[{index}] must be a string, got {type(document).__name__}"
            )
        if len(document) > size:
            raise InvalidRequestError(
                f"documents[{index}] has {len(document)} characters; the limit is {size}"
            )
        if not document.isascii() and not is_unicode(document):
            raise InvalidRequestError(
                f"documents[{index}] holds a lone surrogate (\\ud800-\\udfff): send text"
            )
    return documents


def is_unicode(text: str) -> bool:
    """False for text JSON's \\u escapes can carry but UTF-8 cannot (lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
