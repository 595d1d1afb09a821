"""The ``BRIDGE`` setting: read, checked, and turned into a bridge and per-endpoint limits.

Every problem is found by one function, :func:`problems`, so the system check and
``ready()`` can never disagree about what is valid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import checks

from bridge import DEFAULT_CONCURRENCY, DEFAULT_THREADS, Limits
from bridge._integration import (
    DEFAULT_REQUEST_DEADLINE,
    SDKS,
    deadline_problem,
    limits_from_setting,
    sdks_from_setting,
)

if TYPE_CHECKING:
    import openai as openai_sdk

__all__ = [
    "BridgeSettings",
    "check_bridge_settings",
    "limits_for",
    "openai",
    "problems",
    "read_settings",
    "request_deadline",
]

_KEYS = (
    "concurrency",
    "limits",
    "preload",
    "request_deadline",
    "store",
    "thread_sensitive",
    "threads",
)
_OPENAI_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class BridgeSettings:
    """The ``BRIDGE`` setting, checked, with its defaults filled in."""

    concurrency: int = DEFAULT_CONCURRENCY
    threads: int = DEFAULT_THREADS
    thread_sensitive: bool = True
    limits: Mapping[str, Limits] = field(default_factory=dict)
    #: The SDKs ``ready()`` imports and warms up (see docs/django.md, "Cold workers").
    preload: tuple[str, ...] = SDKS
    #: Seconds each request's bridge calls must finish in (``DeadlineMiddleware``); None: no limit.
    request_deadline: float | None = DEFAULT_REQUEST_DEADLINE


@dataclass(frozen=True)
class Problem:
    id: str
    msg: str
    hint: str


def problems(raw: object) -> list[Problem]:
    """Everything wrong with a ``BRIDGE`` value, each with what to do instead."""
    if not isinstance(raw, Mapping):
        return [
            Problem(
                "bridge.E001",
                f"BRIDGE must be a dict, got {type(raw).__name__}.",
                'Use BRIDGE = {"concurrency": 10, ...}, or remove the setting.',
            )
        ]
    found = [
        Problem(
            "bridge.E002",
            f"BRIDGE has an unknown key {key!r}.",
            f"The keys are {', '.join(map(repr, _KEYS))}.",
        )
        for key in raw
        if key not in _KEYS
    ]
    for key in ("concurrency", "threads"):
        value = raw.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            found.append(
                Problem(
                    "bridge.E003",
                    f"BRIDGE[{key!r}] must be a whole number of at least 1, got {value!r}.",
                    f"Set BRIDGE[{key!r}] = 10, or leave it out for the default.",
                )
            )
    if not isinstance(raw.get("thread_sensitive", True), bool):
        found.append(
            Problem(
                "bridge.E003",
                "BRIDGE['thread_sensitive'] must be True or False.",
                "Leave it out: True is what the ORM needs.",
            )
        )
    try:
        sdks_from_setting(raw.get("preload", True))
    except ValueError as exc:
        found.append(
            Problem(
                "bridge.E006",
                f"BRIDGE['preload'] is invalid: {exc}.",
                "Leave it out to preload every installed SDK, or set it to False.",
            )
        )
    if problem := deadline_problem(raw.get("request_deadline")):
        found.append(
            Problem(
                "bridge.E007",
                f"BRIDGE['request_deadline'] {problem}.",
                "Use a few seconds under the server's worker timeout (25 under gunicorn's "
                "default --timeout 30), or None for no deadline.",
            )
        )
    store = raw.get("store")
    if store is not None:
        try:
            Limits(store=store)
        except ValueError as exc:
            found.append(
                Problem(
                    "bridge.E004",
                    f"BRIDGE['store'] is invalid: {exc}.",
                    "Use a URL such as 'redis://127.0.0.1:6379/0'.",
                )
            )
    return found + _limits_problems(raw.get("limits", {}), store)


def _limits_problems(limits: object, store: object) -> list[Problem]:
    hint = 'Use {"https://api.openai.com/v1": {"rpm": 500, "max_in_flight": 20}}.'
    if not isinstance(limits, Mapping):
        return [
            Problem(
                "bridge.E005",
                f"BRIDGE['limits'] must map base URLs to limits, got {type(limits).__name__}.",
                hint,
            )
        ]
    found = []
    for url, value in limits.items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            found.append(
                Problem("bridge.E005", f"BRIDGE['limits'] key {url!r} is not a base URL.", hint)
            )
            continue
        try:
            limits_from_setting(value, store if isinstance(store, str) else None)
        except (TypeError, ValueError) as exc:
            found.append(
                Problem(
                    "bridge.E005",
                    f"BRIDGE['limits'][{url!r}] is invalid: {exc}.",
                    "Pass bridge.Limits keywords: concurrency, rpm, tpm, store, on_store_error.",
                )
            )
    return found


def read_settings() -> BridgeSettings:
    """``settings.BRIDGE``, checked; raises ValueError listing every problem."""
    raw = getattr(settings, "BRIDGE", {})
    if found := problems(raw):
        raise ValueError(" ".join(p.msg for p in found))
    store = raw.get("store")
    return BridgeSettings(
        concurrency=raw.get("concurrency", DEFAULT_CONCURRENCY),
        threads=raw.get("threads", DEFAULT_THREADS),
        thread_sensitive=raw.get("thread_sensitive", True),
        preload=sdks_from_setting(raw.get("preload", True)),
        request_deadline=raw.get("request_deadline", DEFAULT_REQUEST_DEADLINE),
        limits={
            _normal(url): limits_from_setting(v, store) for url, v in raw.get("limits", {}).items()
        },
    )


def check_bridge_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The system check: one Error per problem in ``settings.BRIDGE``."""
    raw = getattr(settings, "BRIDGE", {})
    return [checks.Error(p.msg, hint=p.hint, id=p.id) for p in problems(raw)]


def request_deadline() -> float | None:
    """``BRIDGE['request_deadline']``; the default when it is invalid (the check says so)."""
    raw = getattr(settings, "BRIDGE", {})
    if not isinstance(raw, Mapping):
        return DEFAULT_REQUEST_DEADLINE
    value = raw.get("request_deadline", DEFAULT_REQUEST_DEADLINE)
    if deadline_problem(value) is not None:
        return DEFAULT_REQUEST_DEADLINE
    return value  # type: ignore[no-any-return]  # checked: a positive number or None


def limits_for(base_url: str) -> Limits | None:
    """The ``Limits`` configured for ``base_url`` in ``BRIDGE['limits']``, or None."""
    return read_settings().limits.get(_normal(base_url))


def openai(**kwargs: Any) -> openai_sdk.AsyncOpenAI:
    """``bridge.openai(**kwargs)`` with the limits ``BRIDGE`` sets for its base URL.

    The base URL is ``base_url``, else ``OPENAI_BASE_URL``, else OpenAI's own, as the
    SDK resolves it.
    """
    from bridge import openai as make  # noqa: PLC0415 - imports the openai SDK

    url = kwargs.get("base_url") or os.environ.get("OPENAI_BASE_URL") or _OPENAI_URL
    kwargs.setdefault("limits", limits_for(str(url)))
    return make(**kwargs)


def _normal(url: str) -> str:
    return url.rstrip("/")
