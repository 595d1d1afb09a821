"""Adding and removing the one OpenTelemetry watcher of the process."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .._integration import Watcher, add_watcher, remove_watcher, require

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = ["instrument", "uninstrument"]

_lock = threading.Lock()
_installed: Watcher | None = None


def instrument(
    meter_provider: MeterProvider | None = None, tracer_provider: TracerProvider | None = None
) -> None:
    """Record metrics and spans of every LLM call through a bridge client from now on.

    Args:
        meter_provider: where the metrics go; default the global one
            (``opentelemetry.metrics.set_meter_provider``).
        tracer_provider: where the spans go; default the global one.

    Calling it again replaces the providers: calls are never recorded twice.

    Raises:
        MissingExtraError: OpenTelemetry's API is not installed (the ``otel`` extra).
    """
    require("bridge.otel.instrument()", "otel", "opentelemetry")
    from ._watcher import OtelWatcher  # noqa: PLC0415 - optional dependency, imported on use

    watcher = OtelWatcher(meter_provider, tracer_provider)
    global _installed  # noqa: PLW0603 - one watcher per process, swapped under the lock
    with _lock:
        if _installed is not None:
            remove_watcher(_installed)
        add_watcher(watcher)
        _installed = watcher


def uninstrument() -> None:
    """Stop recording; calls already under way finish their spans. Does nothing if not on."""
    global _installed  # noqa: PLW0603 - see instrument()
    with _lock:
        if _installed is not None:
            remove_watcher(_installed)
            _installed = None
