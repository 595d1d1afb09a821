"""Preloading: what a web worker's first request would do, done once when the app loads.

``bridge.django`` (in ``ready()``) and ``bridge.flask`` (in ``init_app``) call
:func:`preload`. Under gunicorn ``--preload`` that runs in the master, before fork, so
every worker inherits the imported SDKs and what they build lazily; without ``--preload``
it runs as each worker loads the app, still before its first request. Either way, a
worker's first request then costs its LLM calls plus starting the bridge's loop thread.

The SDKs import their resource modules on first attribute access and build their pydantic
reply models on first reply (``defer_build``). One call of each SDK's commonest endpoint,
answered in memory by a mock transport, does both through public API only; nothing is
sent anywhere, and no event loop or thread is started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["SDKS", "preload", "ready_for_first_request", "sdks_from_setting"]

logger = logging.getLogger("bridge")

#: The SDKs that ``preload`` knows, in the order it loads them.
SDKS = ("openai", "anthropic")

_done: dict[str, bool] = {}
#: Where the warm-up's requests go: nowhere, a mock transport answers them.
_OFFLINE_HOST = "preload.invalid"
_lock = threading.Lock()


def sdks_from_setting(value: object) -> tuple[str, ...]:
    """The SDKs a ``preload`` setting names: True for all of :data:`SDKS`, False for none.

    Raises:
        ValueError: ``value`` is not True, False or a list of names from :data:`SDKS`.
    """
    if value is True or value is False:
        return SDKS if value else ()
    if isinstance(value, list | tuple) and all(name in SDKS for name in value):
        return tuple(value)
    raise ValueError(
        f"preload must be True, False or a list of SDK names from {list(SDKS)!r}, got {value!r}"
    )


def preload(sdks: Iterable[str] = SDKS) -> tuple[str, ...]:
    """Import and warm each installed SDK among ``sdks``, once per process.

    Returns the names that are preloaded (those not installed are skipped). A failure to
    warm an SDK is logged, never raised: preloading only saves time.

    Raises:
        ValueError: a name that is not one of :data:`SDKS`.
    """
    names = tuple(sdks)
    unknown = [name for name in names if name not in SDKS]
    if unknown:
        raise ValueError(f"cannot preload {unknown!r}: the SDKs it knows are {SDKS!r}")
    with _lock:
        return tuple(name for name in names if _preload_one(name))


def _preload_one(name: str) -> bool:
    if name not in _done:
        _done[name] = importlib.util.find_spec(name) is not None
        if _done[name]:
            _import_stack()
            _warm(name, _WARMERS[name])
    return _done[name]


def ready_for_first_request(sdk: str) -> None:
    """Do what a client's first request would do, where the client is made.

    On the caller's thread: import the SDKs' lazily loaded HTTP core and aiohttp, load the
    TLS certificates, and warm ``sdk`` up (its resource modules and reply models; once per
    process, offline). Otherwise the first request pays for it (aiohttp alone takes a
    tenth of a second to import; building the SDK's reply models as much again), and
    under gevent the import fails on the bridge's loop thread: httpcore2 imports trio when
    it is installed, trio runs ``ldconfig``, and gevent's patched ``subprocess`` works only
    on the main thread's hub ("child watchers are only available on the default loop").
    """
    _import_stack()
    preload((sdk,))


def _import_stack() -> None:
    """Import what ``bridge.openai()``/``anthropic()`` and their first request import."""
    try:
        from ._transport import (  # noqa: PLC0415 - imports httpx2 and tenacity
            _aiohttp_transport_class,
            ssl_context,
        )
    except ImportError as exc:  # an SDK without the llm extra: bridge.openai() will say so
        logger.debug("preload: not importing the bridge's HTTP stack: %s", exc)
        return
    with contextlib.suppress(ImportError):
        import httpcore2  # noqa: F401, PLC0415
    _aiohttp_transport_class()  # the SDK's aiohttp adapter, and aiohttp, when installed
    ssl_context()  # CA certificates, loaded once for every pool and every forked worker


class _NotTheWarmUp(logging.Filter):
    """The SDKs' HTTP stack logs every request; the offline warm-up's is nobody's business."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _OFFLINE_HOST not in record.getMessage()


def _warm(name: str, warmer: Callable[[], None]) -> None:
    quiet = _NotTheWarmUp()
    loggers = [logging.getLogger(n) for n in ("httpx2", "openai", "anthropic")]
    for log in loggers:
        log.addFilter(quiet)
    try:
        warmer()
    except Exception:  # an SDK whose API moved on still imported; say so, don't fail
        logger.warning("preloading %s imported it but could not warm it up", name, exc_info=True)
    finally:
        for log in loggers:
            log.removeFilter(quiet)


def _offline(sdk_client: Callable[..., Any], base_url: str, reply: dict[str, Any]) -> Any:
    """An SDK client whose every request gets ``reply`` from memory, never the network."""
    import httpx2  # noqa: PLC0415 - optional dependency

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=reply)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return sdk_client(api_key="preload", base_url=base_url, http_client=http, max_retries=0)


_CHAT_REPLY = {
    "id": "chatcmpl-preload",
    "object": "chat.completion",
    "created": 0,
    "model": "preload",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "ok"},
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}

_MESSAGES = [{"role": "user", "content": "preload"}]

_MESSAGE_REPLY = {
    "id": "msg_preload",
    "type": "message",
    "role": "assistant",
    "model": "preload",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}


def _warm_openai() -> None:
    import openai  # noqa: PLC0415 - optional dependency

    with _offline(openai.OpenAI, f"http://{_OFFLINE_HOST}/v1", _CHAT_REPLY) as client:
        client.chat.completions.create(model="preload", messages=_MESSAGES, max_tokens=1)


def _warm_anthropic() -> None:
    import anthropic  # noqa: PLC0415 - optional dependency

    with _offline(anthropic.Anthropic, f"http://{_OFFLINE_HOST}", _MESSAGE_REPLY) as client:
        client.messages.create(model="preload", messages=_MESSAGES, max_tokens=1)


_WARMERS: dict[str, Callable[[], None]] = {"openai": _warm_openai, "anthropic": _warm_anthropic}
