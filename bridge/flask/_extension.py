"""The Flask extension: ``Bridge(app)`` or ``Bridge().init_app(app)``."""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, AnyStr, TypeVar

from flask import Flask, Response, current_app, g, jsonify, stream_with_context

from bridge import Bridge as CoreBridge
from bridge import CloseableIterator, DeadlineExceeded, Limits, deadline, set_default
from bridge._integration import deadline_reply, preload

from ._config import BridgeConfig, normal_url, read_config

if TYPE_CHECKING:
    import openai as openai_sdk

__all__ = ["Bridge"]

T = TypeVar("T")
A = TypeVar("A")

_KEY = "bridge"
_DEADLINE = "_bridge_request_deadline"  # the request's deadline scope, on flask.g
_OPENAI_URL = "https://api.openai.com/v1"


class Bridge:
    """The Flask extension: one ``bridge.Bridge`` per app, made from its ``BRIDGE_*`` config.

    ``init_app`` checks the config (raising ``ValueError`` that lists every problem),
    makes the app's bridge, installs it as the process default (so ``bridge.map``,
    ``bridge.iterate``... use it), registers this extension as
    ``app.extensions["bridge"]``, and preloads the SDKs of ``BRIDGE_PRELOAD`` (by default
    every installed one): under gunicorn ``--preload`` that happens in the master, before
    fork. The bridge starts lazily, in each worker process, on first use, starts afresh in
    a forked child, and closes at interpreter exit.

    Each request runs under ``bridge.deadline(BRIDGE_REQUEST_DEADLINE)`` (25 s by default,
    None for none), from ``before_request`` to its teardown, async views included (a body
    streamed after the view returns is not bound); a ``bridge.DeadlineExceeded`` a view
    raises becomes a 503 JSON reply with ``Retry-After`` (register your own
    ``errorhandler(bridge.DeadlineExceeded)`` to answer otherwise).

    The helpers (:meth:`map`, :meth:`iterate`, :meth:`openai`...) use the bridge of the
    current app, so one extension object serves every app an app factory makes.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._apps: weakref.WeakKeyDictionary[Flask, tuple[BridgeConfig, CoreBridge]] = (
            weakref.WeakKeyDictionary()
        )
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Check ``app.config``'s ``BRIDGE_*`` keys and give ``app`` its bridge.

        Raises:
            ValueError: a ``BRIDGE_*`` key is invalid; the message lists every problem.
            RuntimeError: a bridge extension is already registered on ``app``.
        """
        if _KEY in app.extensions:
            raise RuntimeError(
                "a bridge extension is already registered on this Flask app: call "
                "Bridge(app) or init_app(app) once per app."
            )
        config = read_config(app.config)
        core = CoreBridge(
            concurrency=config.concurrency, threads=config.threads, name="flask-bridge"
        )
        # The bridge it replaces stays open and idle, as set_default leaves it.
        set_default(core)
        self._apps[app] = (config, core)
        app.extensions[_KEY] = self
        if config.request_deadline is not None:
            _apply_deadline(app, config.request_deadline)
        app.register_error_handler(DeadlineExceeded, _deadline_exceeded)
        preload(config.preload)

    @property
    def bridge(self) -> CoreBridge:
        """The current app's ``bridge.Bridge``."""
        return self._state()[1]

    @property
    def config(self) -> BridgeConfig:
        """The current app's checked ``BRIDGE_*`` config."""
        return self._state()[0]

    def _state(self) -> tuple[BridgeConfig, CoreBridge]:
        app = current_app._get_current_object()  # type: ignore[attr-defined]  # the real app
        try:
            return self._apps[app]
        except KeyError:
            raise RuntimeError(
                f"the bridge extension is not set up on the Flask app {app.name!r}: call "
                "init_app(app) in its factory."
            ) from None

    def limits_for(self, base_url: str) -> Limits | None:
        """The ``Limits`` that ``BRIDGE_LIMITS`` sets for ``base_url``, or None."""
        return self.config.limits.get(normal_url(base_url))

    def openai(self, **kwargs: Any) -> openai_sdk.AsyncOpenAI:
        """``bridge.openai(**kwargs)`` with the limits configured for its base URL.

        The base URL is ``base_url``, else ``OPENAI_BASE_URL``, else OpenAI's own, as the
        SDK resolves it. Make one per process and reuse it: its connections live on the
        bridge's loop.
        """
        from bridge import openai as make  # noqa: PLC0415 - imports the openai SDK

        url = kwargs.get("base_url") or os.environ.get("OPENAI_BASE_URL") or _OPENAI_URL
        kwargs.setdefault("limits", self.limits_for(str(url)))
        return make(**kwargs)

    def run(self, awaitable: Awaitable[T], *, timeout: float | None = None) -> T:
        """Run one awaitable on the app's bridge and return its result."""
        return self.bridge.run(awaitable, timeout=timeout)

    def gather(self, *awaitables: Awaitable[Any], **options: Any) -> list[Any]:
        """``bridge.gather`` on the app's bridge: results in input order."""
        return self.bridge.gather(*awaitables, **options)

    def map(self, fn: Callable[[A], Any], iterable: Iterable[A], **options: Any) -> list[Any]:
        """``bridge.map`` on the app's bridge: ``fn`` on every item, results in input order."""
        return self.bridge.map(fn, iterable, **options)

    def imap(
        self, fn: Callable[[A], Any], iterable: Iterable[A], **options: Any
    ) -> CloseableIterator[Any]:
        """``bridge.imap`` on the app's bridge: results as they finish."""
        return self.bridge.imap(fn, iterable, **options)

    def iterate(
        self, async_iterable: AsyncIterable[T], *, timeout: float | None = None
    ) -> CloseableIterator[T]:
        """A plain iterator over ``async_iterable``, driven by the app's bridge."""
        return self.bridge.iterate(async_iterable, timeout=timeout)

    def stream(
        self, async_iterable: AsyncIterable[AnyStr], *, timeout: float | None = None
    ) -> Iterator[AnyStr]:
        """A response body that streams ``async_iterable`` inside the request's context.

        ``stream_with_context(self.iterate(...))``: when the client goes away, the WSGI
        server closes the response, which closes the iterator, which closes the async
        generator on the loop (and with it the upstream stream).
        """
        return stream_with_context(self.iterate(async_iterable, timeout=timeout))


def _apply_deadline(app: Flask, seconds: float) -> None:
    """Run each of ``app``'s requests under ``bridge.deadline(seconds)``.

    The scope opens in ``before_request`` and closes at teardown, in the request's own
    context (where the view runs, and from which an async view's context is copied).
    """

    @app.before_request
    def open_deadline() -> None:
        scope = contextlib.ExitStack()
        scope.enter_context(deadline(seconds))
        setattr(g, _DEADLINE, scope)

    @app.teardown_request
    def close_deadline(error: BaseException | None) -> None:
        scope: contextlib.ExitStack | None = g.pop(_DEADLINE, None)
        if scope is not None:
            scope.close()


def _deadline_exceeded(error: DeadlineExceeded) -> Response:
    """The 503 for a view that cannot finish in time, with ``Retry-After``."""
    body, retry_after = deadline_reply(error)
    response = jsonify(body)
    response.status_code = 503
    response.headers["Retry-After"] = str(retry_after)
    return response
