"""The app's configuration: ``ready()`` installs the configured default bridge."""

from __future__ import annotations

import logging

from django.apps import AppConfig
from django.core import checks

import bridge

from ._settings import BridgeSettings, check_bridge_settings, read_settings

__all__ = ["BridgeConfig"]

logger = logging.getLogger("bridge.django")


class BridgeConfig(AppConfig):  # type: ignore[misc]  # Django ships no type information
    name = "bridge.django"
    label = "bridge"
    verbose_name = "LLM sync bridge"
    #: The default bridge this app installed, or None when ``BRIDGE`` was invalid.
    bridge: bridge.Bridge | None = None

    def ready(self) -> None:
        checks.register(check_bridge_settings)
        try:
            config = read_settings()
        except ValueError as exc:
            # The system check says what is wrong; start with the defaults meanwhile.
            logger.error("invalid BRIDGE setting, using the bridge's defaults: %s", exc)  # noqa: TRY400 - the check reports it in full
            return
        self.bridge = install(config)


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
