"""Deterministic replies, token counts and embeddings for the simulated server.

Everything here is a pure function of the request, so a test can check that a
reply belongs to its prompt: every reply starts with ``digest=`` followed by
:func:`expected_digest` of the last user message.

Token counts follow the usual rule of thumb of about 4 characters per token:
``tokens(text) == ceil(len(text) / 4)``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from dataclasses import dataclass

__all__ = [
    "DEFAULT_EMBEDDING_DIMENSIONS",
    "DEFAULT_REPLY_TOKENS",
    "Reply",
    "embed",
    "encode_embedding",
    "expected_digest",
    "make_reply",
    "split_chunks",
    "token_count",
]

#: The longest reply, in tokens, when the request sets no ``max_tokens``.
DEFAULT_REPLY_TOKENS = 64
#: Reply lengths without ``max_tokens`` vary between this and DEFAULT_REPLY_TOKENS.
_MIN_REPLY_TOKENS = 8
DEFAULT_EMBEDDING_DIMENSIONS = 8

# Filler words; the text is cut to exactly 4 characters per token anyway.
_FILLER = (
    "alfa",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
)
_CHUNK = re.compile(r"\S+\s*|\s+")


def expected_digest(text: str) -> str:
    """The digest that the server puts in every reply to ``text``.

    A reply to a conversation whose last user message is ``text`` starts with
    ``"digest=" + expected_digest(text)``: the first 12 hex digits of its SHA-256.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def token_count(text: str) -> int:
    """Estimate the tokens in ``text`` at 4 characters per token, rounded up."""
    return -(-len(text) // 4)


@dataclass(frozen=True)
class Reply:
    """The text of one reply and why it ended."""

    text: str
    tokens: int
    truncated: bool  # True when max_tokens cut the reply short


def make_reply(last_user_message: str, max_tokens: int | None) -> Reply:
    """Build the deterministic reply to ``last_user_message``, at most ``max_tokens`` long."""
    digest = hashlib.sha256(last_user_message.encode("utf-8")).hexdigest()
    natural = _MIN_REPLY_TOKENS + int(digest[12:16], 16) % (
        DEFAULT_REPLY_TOKENS - _MIN_REPLY_TOKENS + 1
    )
    tokens = natural if max_tokens is None else min(natural, max_tokens)
    text = _reply_text(digest, natural * 4)[: tokens * 4]
    return Reply(text=text, tokens=token_count(text), truncated=tokens < natural)


def _reply_text(digest: str, length: int) -> str:
    words = [f"digest={digest[:12]}"]
    size = len(words[0])
    picks = bytes.fromhex(digest)
    while size < length:
        index = len(words)
        word = _FILLER[(picks[index % len(picks)] + index // len(picks)) % len(_FILLER)]
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:length]


def split_chunks(text: str) -> list[str]:
    """Split a reply into streamed pieces, one word (with its trailing space) each."""
    return _CHUNK.findall(text) or [""]


def embed(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector of ``dimensions`` floats derived from ``text``."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        block = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((byte - 127.5) / 127.5 for byte in block)
        counter += 1
    del values[dimensions:]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    # Round-trip through float32 so "float" and "base64" answers carry the same numbers.
    return list(struct.unpack(f"<{dimensions}f", packed))


def encode_embedding(vector: list[float]) -> str:
    """Encode a vector as OpenAI's ``encoding_format="base64"`` does: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
