"""The ``bridge_*`` settings of a Celery app: read, checked, and turned into limits.

Every problem is found by :func:`problems`, and :func:`read_config` raises them all at once,
so a misconfigured app fails at ``init_app`` (in every process that imports it) with the
whole list, not in a worker at the first task.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import bridge
from bridge._integration import (
    LANES,
    SDKS,
    Lane,
    is_postgres_url,
    limits_from_setting,
    limits_setting_problems,
    redacted_url,
    sdks_from_setting,
)

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["KEYS", "CeleryConfig", "config_of", "problems", "read_config", "remember", "settings"]

#: The ``app.conf`` settings ``init_app`` reads, and the keyword each one is set by.
KEYS = {
    "concurrency": "bridge_concurrency",
    "threads": "bridge_threads",
    "limits": "bridge_limits",
    "store": "bridge_store",
    "journal": "bridge_journal",
    "preload": "bridge_preload",
    "lane": "bridge_lane",
}


@dataclass(frozen=True)
class CeleryConfig:
    """A Celery app's ``bridge_*`` settings, checked, with the defaults filled in.

    ``concurrency`` and ``threads`` size each worker process's bridge; ``limits`` maps base
    URLs to ``bridge.Limits`` (``store`` filled in where they name none); ``journal`` is
    where :func:`bridge.celery.map` records outcomes (a ``postgresql://`` URL); ``lane`` is
    the priority lane of the workers' calls made outside ``bridge.priority()``: batch, so
    they yield to the web tier's interactive calls on a shared quota.
    """

    concurrency: int = bridge.DEFAULT_CONCURRENCY
    threads: int = bridge.DEFAULT_THREADS
    store: str | None = field(default=None, repr=False)
    journal: str | None = field(default=None, repr=False)
    limits: Mapping[str, bridge.Limits] = field(default_factory=dict)
    preload: tuple[str, ...] = SDKS
    lane: Lane = "batch"

    def __repr__(self) -> str:
        # The store and journal URLs may hold passwords: only where they point is shown.
        shown = {name: getattr(self, name) for name in ("store", "journal")}
        where = ", ".join(f"{n}={redacted_url(v)!r}" for n, v in shown.items() if v is not None)
        return (
            f"CeleryConfig(concurrency={self.concurrency}, threads={self.threads}, "
            f"limits={dict(self.limits)!r}, preload={self.preload!r}, lane={self.lane!r}"
            f"{', ' if where else ''}{where})"
        )

    def limits_for(self, base_url: str) -> bridge.Limits:
        """The limits for ``base_url``: ``bridge_limits``'s, else ``Limits(store=bridge_store)``."""
        found = self.limits.get(base_url.rstrip("/"))
        if found is not None:
            return found
        return bridge.Limits() if self.store is None else bridge.Limits(store=self.store)


def problems(conf: Mapping[str, Any]) -> list[str]:
    """Everything wrong with the ``bridge_*`` settings in ``conf``, each saying what to do."""
    found = []
    for key in ("bridge_concurrency", "bridge_threads"):
        value = _or(conf.get(key), 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            found.append(
                f"{key} must be a whole number of at least 1, got {value!r}: set "
                f"{key} = 10, or leave it out for the default."
            )
    try:
        sdks_from_setting(_or(conf.get("bridge_preload"), True))
    except ValueError as exc:
        found.append(f"bridge_preload is invalid ({exc}): leave it out, or set it to False.")
    if _or(conf.get("bridge_lane"), "batch") not in LANES:
        found.append(
            f"bridge_lane must be 'batch' or 'interactive', got {conf.get('bridge_lane')!r}: "
            "leave it out for batch (workers yield to the web tier's interactive calls)."
        )
    store = conf.get("bridge_store")
    if store is not None:
        try:
            bridge.Limits(store=store)
        except (TypeError, ValueError) as exc:
            found.append(
                f"bridge_store is invalid ({exc}): use a URL such as 'redis://127.0.0.1:6379/0'."
            )
    journal = conf.get("bridge_journal")
    if journal is not None and not is_postgres_url(journal):
        found.append(
            "bridge_journal must be a PostgreSQL URL that every worker reaches, such as "
            "'postgresql://user@db-host/llm' (a SQLite file has one writer; a cluster has many)."
        )
    return found + limits_setting_problems(conf.get("bridge_limits") or {}, "bridge_limits")


def read_config(conf: Mapping[str, Any]) -> CeleryConfig:
    """The checked ``bridge_*`` settings of ``conf`` (a Celery app's ``app.conf``).

    Raises:
        ValueError: listing every problem, each with what to write instead.
    """
    if found := problems(conf):
        raise ValueError("invalid Celery config: " + " ".join(found))
    store = conf.get("bridge_store")
    limits: Mapping[str, object] = conf.get("bridge_limits") or {}
    return CeleryConfig(
        concurrency=conf.get("bridge_concurrency") or bridge.DEFAULT_CONCURRENCY,
        threads=conf.get("bridge_threads") or bridge.DEFAULT_THREADS,
        store=store,
        journal=conf.get("bridge_journal"),
        preload=sdks_from_setting(_or(conf.get("bridge_preload"), True)),
        lane=cast(Lane, _or(conf.get("bridge_lane"), "batch")),
        limits={
            url.rstrip("/"): limits_from_setting(value, store) for url, value in limits.items()
        },
    )


def _or(value: object, default: object) -> object:
    return default if value is None else value


# Each app's checked settings, kept here (not in _setup) so that the fan-out task and the
# set-up read one registry without importing each other.
_configs: weakref.WeakKeyDictionary[Celery, CeleryConfig] = weakref.WeakKeyDictionary()


def remember(app: Celery, config: CeleryConfig) -> None:
    """Keep ``app``'s checked settings (``init_app`` does)."""
    _configs[app] = config


def config_of(app: Celery) -> CeleryConfig | None:
    """``app``'s checked settings, or None if ``init_app`` was not called on it."""
    return _configs.get(app)


def settings(app: Celery | None = None) -> CeleryConfig:
    """The checked ``bridge_*`` settings of ``app`` (default: Celery's current app).

    Raises:
        RuntimeError: ``init_app`` was not called on that app.
    """
    if app is None:
        from celery import current_app  # noqa: PLC0415 - celery is an optional dependency

        app = cast(Any, current_app)._get_current_object()
    config = _configs.get(app)
    if config is None:
        raise RuntimeError(
            f"bridge.celery is not set up on the Celery app {app.main!r}: call "
            "bridge.celery.init_app(app) where the app is made."
        )
    return config
