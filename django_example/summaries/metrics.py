"""``/metrics`` for Prometheus: the bridge's OpenTelemetry metrics, exported by
OpenTelemetry's Prometheus exporter into prometheus_client's registry.

On when the ``django-example`` extra is installed (``settings.METRICS``). Each process
keeps its own counts: under gunicorn with several workers, one scrape sees the worker that
answered it, so give each worker its own port or push with OTLP (docs/operations.md).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

import bridge.otel


def setup() -> None:
    """A meter provider read by Prometheus's scrapes, and the bridge instrumented on it.

    In ``ready()``: under gunicorn ``--preload``, in the master, and each forked worker
    counts from there on its own (the reader only answers scrapes; it runs no thread).
    """
    from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415

    # The reader registers itself with prometheus_client's default registry.
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    bridge.otel.instrument(meter_provider=provider)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The process's metrics in Prometheus's text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest  # noqa: PLC0415

    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
