"""The ``BRIDGE_*`` config keys: read, checked, and turned into per-endpoint limits.

Every problem is found by one function, :func:`problems`, and :func:`read_config` raises
them all at once, so a misconfigured app fails at ``init_app`` with the whole list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge import DEFAULT_CONCURRENCY, DEFAULT_THREADS, Limits
from bridge._integration import (
    DEFAULT_REQUEST_DEADLINE,
    SDKS,
    deadline_problem,
    limits_from_setting,
    limits_setting_problems,
    sdks_from_setting,
)

__all__ = ["BridgeConfig", "normal_url", "problems", "read_config"]


@dataclass(frozen=True)
class BridgeConfig:
    """The app's ``BRIDGE_*`` keys, checked, with the defaults filled in."""

    concurrency: int = DEFAULT_CONCURRENCY
    threads: int = DEFAULT_THREADS
    store: str | None = None
    limits: Mapping[str, Limits] = field(default_factory=dict)
    #: The SDKs ``init_app`` imports and warms up (see docs/flask.md, "Cold workers").
    preload: tuple[str, ...] = SDKS
    #: Seconds each request's bridge calls must finish in; None for no deadline.
    request_deadline: float | None = DEFAULT_REQUEST_DEADLINE


def problems(config: Mapping[str, object]) -> list[str]:
    """Everything wrong with the ``BRIDGE_*`` keys of ``config``, each saying what to do."""
    found = []
    for key in ("BRIDGE_CONCURRENCY", "BRIDGE_THREADS"):
        value = config.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            found.append(
                f"{key} must be a whole number of at least 1, got {value!r}: set "
                f"{key} = 10, or leave it out for the default."
            )
    try:
        sdks_from_setting(config.get("BRIDGE_PRELOAD", True))
    except ValueError as exc:
        found.append(
            f"BRIDGE_PRELOAD is invalid ({exc}): leave it out to preload every installed "
            "SDK, or set it to False."
        )
    if problem := deadline_problem(config.get("BRIDGE_REQUEST_DEADLINE")):
        found.append(
            f"BRIDGE_REQUEST_DEADLINE {problem}: use a few seconds under the server's worker "
            "timeout (25 under gunicorn's default --timeout 30), or None for no deadline."
        )
    store = config.get("BRIDGE_STORE")
    if store is not None:
        try:
            Limits(store=store)  # type: ignore[arg-type]  # checking is the point
        except (TypeError, ValueError) as exc:
            found.append(
                f"BRIDGE_STORE is invalid ({exc}): use a URL such as 'redis://127.0.0.1:6379/0'."
            )
    return found + limits_setting_problems(config.get("BRIDGE_LIMITS", {}), "BRIDGE_LIMITS")


def read_config(config: Mapping[str, object]) -> BridgeConfig:
    """The checked ``BRIDGE_*`` keys of ``config``.

    Raises:
        ValueError: listing every problem, each with what to write instead.
    """
    if found := problems(config):
        raise ValueError("invalid Flask config: " + " ".join(found))
    store = config.get("BRIDGE_STORE")
    assert store is None or isinstance(store, str)  # problems() checked it
    limits: Mapping[str, object] = config.get("BRIDGE_LIMITS", {})  # type: ignore[assignment]
    return BridgeConfig(
        concurrency=config.get("BRIDGE_CONCURRENCY", DEFAULT_CONCURRENCY),  # type: ignore[arg-type]
        threads=config.get("BRIDGE_THREADS", DEFAULT_THREADS),  # type: ignore[arg-type]
        store=store,
        preload=sdks_from_setting(config.get("BRIDGE_PRELOAD", True)),
        request_deadline=config.get("BRIDGE_REQUEST_DEADLINE", DEFAULT_REQUEST_DEADLINE),  # type: ignore[arg-type]
        limits={
            normal_url(url): limits_from_setting(value, store) for url, value in limits.items()
        },
    )


def normal_url(url: str) -> str:
    return url.rstrip("/")
