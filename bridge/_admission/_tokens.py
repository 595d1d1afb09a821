"""What a request costs against token limits, as each provider counts it.

Providers charge a request at admission, before it runs, and they differ in what:

- **OpenAI** charges the larger of ``max_tokens`` and its estimate of the prompt, and
  refunds nothing inside the window (``"max"``);
- **Azure OpenAI** charges prompt + ``max_tokens`` (+ ``best_of``), and refunds nothing
  (``"sum"``);
- **gateways that count usage** charge prompt + ``max_tokens`` and settle to the real
  usage when the reply ends (``"usage"``);
- **Anthropic** keeps input (ITPM) and output (OTPM) limits apart: the prompt counts
  against input, ``max_tokens`` against output up front, settled to the real output.

The bridge charges what the provider charges, so its local budget runs exactly as tight
as the server's; and every response's ``remaining`` headers re-synchronise it anyway.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_OUTPUT_ESTIMATE",
    "TOKEN_ACCOUNTINGS",
    "Accounting",
    "Estimate",
    "TokenAccounting",
    "estimate",
    "resolve_accounting",
]

#: What ``Limits(token_accounting=...)`` accepts.
TokenAccounting = Literal["auto", "max", "sum", "usage"]
#: A resolved policy.
Accounting = Literal["max", "sum", "usage"]
TOKEN_ACCOUNTINGS: Final = ("auto", "max", "sum", "usage")

#: Reply tokens assumed when a request names no ``max_tokens`` (or its variants).
DEFAULT_OUTPUT_ESTIMATE = 256


@dataclass(frozen=True, slots=True)
class Estimate:
    """A request's tokens before it is sent: the prompt's, and the reply's cap."""

    prompt: int
    output: int

    def charges(self, accounting: Accounting) -> dict[str, int]:
        """The amount each kind of bucket is charged at admission."""
        total = max(self.prompt, self.output) if accounting == "max" else self.prompt + self.output
        return {"tokens": total, "input_tokens": self.prompt, "output_tokens": self.output}


NO_TOKENS: Final = Estimate(0, 0)


def estimate(method: str, path: str, content: bytes) -> Estimate:
    """Prompt characters / 4 (per text, rounded up) and the reply's cap, from a JSON body."""
    if method != "POST" or not content:
        return NO_TOKENS
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return NO_TOKENS
    if not isinstance(body, dict):
        return NO_TOKENS
    prompt = sum(
        math.ceil(len(text) / 4)
        for field in ("messages", "system", "input", "prompt")
        for text in _texts(body.get(field))
    )
    if path.endswith("/embeddings"):
        return Estimate(prompt, 0)
    return Estimate(prompt, _output_cap(body))


def _output_cap(body: dict[str, object]) -> int:
    """The reply's cap, times the completions asked for (``n``, Azure's ``best_of``)."""
    caps = [
        _count(body.get(n)) for n in ("max_completion_tokens", "max_output_tokens", "max_tokens")
    ]
    cap = next((c for c in caps if c), DEFAULT_OUTPUT_ESTIMATE)
    return cap * max(_count(body.get("n")), _count(body.get("best_of")), 1)


def _count(value: object) -> int:
    """A positive whole number from a request body, or 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _texts(value: object, depth: int = 0) -> Iterator[str]:
    if depth > 8:  # message parts nest two or three deep; deeper is not a prompt
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item, depth + 1)
    elif isinstance(value, dict):
        for key in ("content", "text"):
            yield from _texts(value.get(key), depth + 1)


def resolve_accounting(setting: TokenAccounting, url: str) -> Accounting:
    """The policy for an endpoint: the setting, or for ``"auto"`` the provider's own.

    Anthropic (``/v1/messages``) settles to usage; Azure OpenAI charges the sum;
    ``api.openai.com`` the maximum. Any other server gets ``"sum"``: it never charges
    less than either provider would, and the ``remaining`` headers widen it if the server
    is more generous.
    """
    if setting != "auto":
        return setting
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host.endswith("anthropic.com") or parts.path.rstrip("/").endswith("/messages"):
        return "usage"
    if host == "api.openai.com":
        return "max"
    return "sum"
