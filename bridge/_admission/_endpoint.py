"""Endpoints: where requests go and whose quota they use, named safely.

An endpoint is a base URL (scheme, host, port and the path up to ``/v1``; never user-info
or a query) plus a short SHA-256 of the API key; the key itself is never kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Endpoint", "endpoint_of"]

#: Query parameters that carry credentials; they go into the key hash, never the label.
_QUERY_SECRETS: Final = frozenset(
    {"key", "api_key", "api-key", "apikey", "access_token", "token", "code", "sig"}
)


@dataclass(frozen=True)
class Endpoint:
    """Where requests go, and whose quota they use: a label that is safe to log."""

    base: str
    key_hash: str

    @property
    def label(self) -> str:
        return f"{self.base} key#{self.key_hash}"


def endpoint_of(url: str, secret: str) -> Endpoint:
    """The endpoint of a request URL: origin plus the path up to ``/v1``, and the key hash.

    User-info (``user:password@``) and the query never reach the label; credentials in the
    query are part of the key, beside the key header's.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port out of range; the request itself will fail
        port = ""
    path = parts.path
    index = path.find("/v1/")
    prefix = path[: index + 3] if index >= 0 else ("/v1" if path == "/v1" else "")
    query = _query_secret(parts.query)
    secret = f"{secret}|{query}" if query else secret
    digest = hashlib.sha256(secret.encode()).hexdigest()[:12] if secret else "none"
    return Endpoint(f"{parts.scheme}://{host}{port}{prefix}", digest)


def _query_secret(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{k}={v}" for k, v in pairs if k.lower() in _QUERY_SECRETS)
