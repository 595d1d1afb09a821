"""The LLM side: one client per process and the coroutine that summarises a document."""

from __future__ import annotations

import atexit
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from flask import Flask, current_app

import bridge

SYSTEM_PROMPT = "Summarise the user's document in two sentences."
_KEY = "summarizer.client"
_lock = threading.Lock()


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


def client() -> Any:
    """The current app's AsyncOpenAI, on the bridge's loop.

    ``create_app`` makes it, so that under gunicorn ``--preload`` the master makes it,
    before fork: a worker's first request then pays for nothing but its LLM calls (its
    connections are opened on the worker's own loop, never shared). Only ``flask run``
    without ``OPENAI_BASE_URL`` makes it on first use, after starting the simulated
    server, so that the reloader's parent never starts one.
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    with _lock:
        if _KEY not in app.extensions:
            if simulates(app):
                use_simulated_server(app)  # which makes the client
            else:
                app.extensions[_KEY] = make_client(app)
        return app.extensions[_KEY]


def setup(app: Flask) -> None:
    """Make the app's client now (``create_app`` calls this), unless ``flask run`` is to
    start the simulated server on first use, or there is no key: the SDK refuses to make
    a client without one, and the first request then says so."""
    if app.config["LLM_API_KEY"] and not simulates(app):
        app.extensions[_KEY] = make_client(app)


def simulates(app: Flask) -> bool:
    """True when the app is to start the simulated server on first use (``flask run``)."""
    return app.config["LLM_BASE_URL"] is None and bool(app.config["SIMULATE_LLM"])


def make_client(app: Flask) -> Any:
    with app.app_context():
        return app.extensions["bridge"].openai(
            base_url=app.config["LLM_BASE_URL"], api_key=app.config["LLM_API_KEY"], timeout=60
        )


def use_simulated_server(app: Flask) -> None:
    """Start ``bridge.testing``'s server for this process and point the app at it."""
    from bridge.testing import serve  # noqa: PLC0415 - only development needs aiohttp's server

    server = serve(latency=app.config["SIMULATED_LATENCY"])
    atexit.register(server.close)
    app.config["LLM_BASE_URL"] = server.base_url
    app.config["LLM_API_KEY"] = app.config["LLM_API_KEY"] or "simulated"
    # A client made before pointed at OpenAI's API, and has not been used.
    app.extensions[_KEY] = make_client(app)
    print(
        f"Simulated LLM server at {server.base_url} (set OPENAI_BASE_URL to use a real one)",
        file=sys.stderr,
    )


def messages(document: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": document},
    ]


async def summarise(document: str) -> tuple[str, dict[str, int]]:
    """One document's summary and token usage (runs on the bridge's loop, in the app's
    context: the bridge carries the caller's contextvars)."""
    reply = await client().chat.completions.create(
        model=current_app.config["LLM_MODEL"],
        messages=messages(document),
        max_tokens=current_app.config["SUMMARIZE_MAX_TOKENS"],
    )
    usage = reply.usage
    tokens = {
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "total_tokens": usage.total_tokens if usage else 0,
    }
    return reply.choices[0].message.content or "", tokens


def summarise_indexed(start: float, *, raise_on_deadline: bool = False) -> Any:
    """An ``async def (index, document) -> Summary`` that reports failures instead of
    raising, so that ``imap`` keeps going and nothing that succeeded is lost.

    ``raise_on_deadline``: a call that cannot finish before the request's deadline fails
    the whole request instead (the extension answers 503 with ``Retry-After``)."""

    async def one(item: tuple[int, str]) -> Summary:
        index, document = item
        try:
            text, usage = await summarise(document)
        except Exception as exc:
            if raise_on_deadline and missed_deadline(exc):
                raise
            return Summary(index, error=describe(exc), done_s=time.perf_counter() - start)
        return Summary(index, text, usage, done_s=time.perf_counter() - start)

    return one


def concurrency_for(mode: str) -> int:
    return 1 if mode == "sequential" else int(current_app.config["SUMMARIZE_CONCURRENCY"])


def summarise_all(documents: list[str], mode: str, start: float) -> list[Summary]:
    """Every document's Summary, in input order; a failed one carries its error."""
    client()  # made here, on the request's thread, not by ten coroutines at once
    return current_app.extensions["bridge"].map(  # type: ignore[no-any-return]
        summarise_indexed(start, raise_on_deadline=True),
        enumerate(documents),
        concurrency=concurrency_for(mode),
    )


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
