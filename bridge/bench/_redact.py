"""Keep the API key and URL passwords out of what the bench prints and writes.

Redaction goes by value, not by flag: whatever spelling brought the key in (``--api-key
KEY``, ``--api-key=KEY``, ``OPENAI_API_KEY``), each occurrence of the key itself is replaced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["MASK", "Redactor", "without_userinfo"]

MASK = "***"
T = TypeVar("T")


@dataclass(frozen=True)
class Redactor:
    """Replaces each secret where it stands as a whole token in a string.

    A whole token, not any substring: a short test key such as ``k`` must not turn
    ``--api-key`` into ``--api-***ey``. The token's edges are anything but a letter, a
    digit, ``_`` or ``-``, so ``=KEY``, ``Bearer KEY`` and ``user:PASS@host`` all match.
    """

    pattern: re.Pattern[str] | None

    @classmethod
    def for_run(cls, api_key: str | None, base_url: str | None) -> Redactor:
        secrets = [api_key or "", *_userinfo_secrets(base_url or "")]
        return cls.of(secrets)

    @classmethod
    def of(cls, secrets: Iterable[str]) -> Redactor:
        # Longest first, so "user:pass" goes whole before "pass" alone is looked for.
        found = sorted({s for s in secrets if s}, key=len, reverse=True)
        if not found:
            return cls(None)
        body = "|".join(re.escape(secret) for secret in found)
        return cls(re.compile(rf"(?<![\w-])(?:{body})(?![\w-])"))

    def __call__(self, text: str) -> str:
        return text if self.pattern is None else self.pattern.sub(MASK, text)

    def walk(self, value: T) -> T:
        """A copy of a JSON-like value with every string value in it redacted.

        Keys stay: they are the results' own names (scenarios, approaches, error kinds),
        and a short secret equal to one of them must not break the file's shape.
        """
        if isinstance(value, str):
            return self(value)  # type: ignore[return-value]  # a str in, a str out
        if isinstance(value, dict):
            return {k: self.walk(v) for k, v in value.items()}  # type: ignore[return-value]
        if isinstance(value, list | tuple):
            return type(value)(self.walk(v) for v in value)
        return value


def _userinfo_secrets(url: str) -> list[str]:
    """``user:pass``, ``pass`` and its decoded form, from ``scheme://user:pass@host``."""
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    if not userinfo:
        return []
    password = userinfo.partition(":")[2]
    return [userinfo, password, unquote(password)]


def without_userinfo(url: str) -> str:
    """``url`` for display: ``https://user:pass@host/v1`` becomes ``https://***@host/v1``."""
    parts = urlsplit(url)
    _, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    return urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))
