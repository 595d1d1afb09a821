"""Checking a summarize request's JSON body; every problem becomes a 400 with a message."""

from __future__ import annotations

import json
from dataclasses import dataclass

from flask import current_app

MODES = ("bridge", "sequential")


class InvalidRequestError(ValueError):
    """The request body is not a valid summarize request; the message says why."""


@dataclass(frozen=True)
class SummarizeRequest:
    documents: list[str]
    mode: str


def parse(body: bytes) -> SummarizeRequest:
    """The request in ``body``, or InvalidRequestError saying what to send instead."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(
            f"the body is not JSON ({exc}); send {{'documents': [...]}}"
        ) from exc
    if not isinstance(data, dict):
        raise InvalidRequestError("the body must be a JSON object: {'documents': [...]}")
    mode = data.get("mode", "bridge")
    if mode not in MODES:
        raise InvalidRequestError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return SummarizeRequest(check_documents(data.get("documents")), mode)


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
    return documents
