"""OpenTelemetry metrics and traces of every LLM call: ``bridge.otel.instrument()``.

::

    import bridge.otel

    bridge.otel.instrument()  # the global meter and tracer providers

From then on every call made through a bridge client (``bridge.openai()``,
``bridge.anthropic()``, ``bridge.wrap()``) records, per endpoint and lane, the attempts it
sent, its retries, 429s and admission waits, its tokens and duration, and one CLIENT span
named ``"{operation} {model}"`` with the GenAI semantic conventions' attributes. Prompts,
API keys and URL passwords never reach an attribute. :func:`uninstrument` stops it.

Needs the ``otel`` extra (``opentelemetry-api``; an SDK or a distro to export anything).
``import bridge.otel`` itself imports nothing of OpenTelemetry. See docs/operations.md,
"Metrics and traces", for the names.
"""

from __future__ import annotations

from ._instrument import instrument, uninstrument

__all__ = ["instrument", "uninstrument"]
