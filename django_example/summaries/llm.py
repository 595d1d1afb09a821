"""The LLM side: one client per process and the coroutine that summarises a document."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings

import bridge
import bridge.django

SYSTEM_PROMPT = "Summarise the user's document in two sentences."


@dataclass
class Summary:
    index: int
    summary: str | None = None
    usage: dict[str, int] | None = None
    error: str | None = None
    #: Seconds from the start of the request until this one finished.
    done_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def client() -> Any:
    """The process's AsyncOpenAI, for sync and async views alike, under the same limits.

    ``SummariesConfig.ready()`` makes it, so that under gunicorn ``--preload`` the master
    makes it before fork: a forked worker's first request then pays for nothing but its
    LLM calls. Its connections are opened on the worker's bridge loop, never shared; an
    async view's requests (on uvicorn's loop) are sent there too.
    """
    return bridge.django.openai(
        base_url=settings.LLM_BASE_URL, api_key=settings.LLM_API_KEY, timeout=60
    )


def messages(document: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": document},
    ]


async def summarise(document: str, *, llm: Any = None) -> tuple[str, dict[str, int]]:
    """One document's summary and token usage."""
    reply = await (llm or client()).chat.completions.create(
        model=settings.LLM_MODEL,
        messages=messages(document),
        max_tokens=settings.SUMMARIZE_MAX_TOKENS,
    )
    usage = reply.usage
    tokens = {
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "total_tokens": usage.total_tokens if usage else 0,
    }
    return reply.choices[0].message.content or "", tokens


def summarise_indexed(
    start: float,
    *,
    llm: Any = None,
    on_done: Callable[[Summary], Awaitable[None]] | None = None,
    raise_on_deadline: bool = False,
) -> Any:
    """An ``async def (index, document) -> Summary`` that reports failures instead of
    raising, so that ``bridge.imap`` keeps going and nothing that succeeded is lost.
    ``on_done`` is awaited with each Summary as soon as it is known.
    ``raise_on_deadline``: a call that cannot finish before the request's deadline fails
    the whole request instead (``bridge.django.DeadlineMiddleware`` answers 503)."""

    async def one(item: tuple[int, str]) -> Summary:
        index, document = item
        try:
            text, usage = await summarise(document, llm=llm)
        except Exception as exc:
            if raise_on_deadline and missed_deadline(exc):
                raise
            done = Summary(index, error=describe(exc), done_s=time.perf_counter() - start)
        else:
            done = Summary(index, text, usage, done_s=time.perf_counter() - start)
        if on_done is not None:
            await on_done(done)
        return done

    return one


def concurrency_for(mode: str) -> int:
    return 1 if mode == "sequential" else settings.SUMMARIZE_CONCURRENCY


def summarise_all(
    documents: list[str],
    mode: str,
    start: float,
    on_done: Callable[[Summary], Awaitable[None]] | None = None,
) -> list[Summary]:
    """Every document's Summary, in input order; a failed one carries its error."""
    one = summarise_indexed(start, on_done=on_done, raise_on_deadline=True)
    return bridge.map(one, enumerate(documents), concurrency=concurrency_for(mode))


def missed_deadline(exc: BaseException) -> bool:
    """Whether ``exc`` is the request's deadline passing (the SDK wraps the bridge's error)."""
    return isinstance(exc, bridge.DeadlineExceeded) or isinstance(
        exc.__cause__, bridge.DeadlineExceeded
    )


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def total_usage(summaries: list[Summary]) -> dict[str, int]:
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    return {key: sum(s.usage[key] for s in summaries if s.usage) for key in keys}
