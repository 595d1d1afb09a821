"""The app's configuration: ``ready()`` installs the configured default bridge and preloads.

Under gunicorn ``--preload``, ``ready()`` runs in the master: the settings are read, the
SDKs imported and warmed up there, before fork (``bridge._preload``), and each worker
only starts the bridge's loop thread, lazily, on its first bridged call.
"""

from __future__ import annotations

import logging

from django.apps import AppConfig
from django.core import checks

import bridge
from bridge._integration import SDKS, preload

from ._middleware import check_middleware
from ._settings import BridgeSettings, check_bridge_settings, read_settings

__all__ = ["BridgeConfig"]

logger = logging.getLogger("bridge.django")


class BridgeConfig(AppConfig):  # type: ignore[misc]  # Django ships no type information
    name = "bridge.django"
    label = "bridge"
    verbose_name = "LLM sync bridge"
    #: The default bridge this app installed, or None when ``BRIDGE`` was invalid.
    bridge: bridge.Bridge | None = None
    #: The SDKs ``ready()`` preloaded: those of ``BRIDGE["preload"]`` that are installed.
    preloaded: tuple[str, ...] = ()

    def ready(self) -> None:
        checks.register(check_bridge_settings)
        checks.register(check_middleware)
        try:
            config = read_settings()
        except ValueError as exc:
            # The system check says what is wrong; start with the defaults meanwhile.
            logger.error("invalid BRIDGE setting, using the bridge's defaults: %s", exc)  # noqa: TRY400 - the check reports it in full
            self.preloaded = preload(SDKS)
            return
        self.bridge = install(config)
        self.preloaded = preload(config.preload)


def install(config: BridgeSettings) -> bridge.Bridge:
    """Make a bridge from ``config`` the process default; it starts on first use.

    The bridge it replaces was never configured by this app; it stays open, idle, as
    ``set_default`` leaves it. Each worker process starts its own loop lazily, and a
    forked child (gunicorn ``--preload``) starts afresh; the bridge closes at exit.
    """
    instance = bridge.Bridge(
        concurrency=config.concurrency,
        threads=config.threads,
        thread_sensitive=config.thread_sensitive,
        name="django-bridge",
    )
    bridge.set_default(instance)
    return instance
