"""The watcher that turns the bridge's reports on each LLM call into metrics and a span.

Names follow OpenTelemetry's GenAI semantic conventions where they have one
(``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage``, the span's
``gen_ai.*`` attributes); what only the bridge knows (attempts, admission, pauses) is
under ``bridge.*``. The table is in docs/operations.md, "Metrics and traces".
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

import bridge

from .._integration import CallInfo, Watch

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = ["OtelWatcher"]

Attributes = dict[str, "AttributeValue"]

#: The semantic conventions' advice for GenAI durations (seconds), with two finer buckets
#: in front: an admission wait is mostly nothing, and tens of milliseconds matter.
SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56,
                   5.12, 10.24, 20.48, 40.96, 81.92)  # fmt: skip
#: The semantic conventions' advice for ``gen_ai.client.token.usage``.
TOKEN_BUCKETS = tuple(4.0**n for n in range(14))


class OtelWatcher:
    """Counts attempts, retries, 429s and pauses, and gives each call a span."""

    def __init__(
        self, meter_provider: MeterProvider | None, tracer_provider: TracerProvider | None
    ) -> None:
        meter = metrics.get_meter("bridge", bridge.__version__, meter_provider=meter_provider)
        self.tracer = trace.get_tracer("bridge", bridge.__version__, tracer_provider)
        self.requests = meter.create_counter(
            "bridge.requests", "{request}", "Attempts sent to an LLM endpoint, retries included"
        )
        self.retries = meter.create_counter(
            "bridge.retries", "{retry}", "Attempts that another attempt follows"
        )
        self.rate_limited = meter.create_counter(
            "bridge.rate_limited", "{response}", "Attempts answered with HTTP 429"
        )
        self.pauses = meter.create_counter(
            "bridge.pauses", "{pause}", "Times a 429 paused every request to an endpoint"
        )
        self.wait = meter.create_histogram(
            "bridge.admission.wait",
            "s",
            "Time an attempt waited for admission",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.attempt = meter.create_histogram(
            "bridge.attempt.duration",
            "s",
            "Time from sending an attempt to its answer",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            "s",
            "GenAI operation duration",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Input and output tokens of a call",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )

    def start(self, call: CallInfo) -> Watch:
        return _CallWatch(self, call)

    def paused(self, endpoint: str, seconds: float) -> None:
        self.pauses.add(1, {"bridge.endpoint": endpoint})


def _metric_attributes(call: CallInfo) -> Attributes:
    attributes: Attributes = {
        "bridge.endpoint": call.endpoint,
        "bridge.lane": call.lane,
        "gen_ai.system": call.system,
        "gen_ai.operation.name": call.operation,
    }
    if call.model is not None:
        attributes["gen_ai.request.model"] = call.model
    return attributes


def _start_span(tracer: trace.Tracer, call: CallInfo, attributes: Attributes) -> Span:
    """The call's span, a child of whatever span is current in the caller's context (the
    bridge runs each call in a copy of it). It is never made current: it ends elsewhere."""
    name = f"{call.operation} {call.model}" if call.model else call.operation
    span_attributes: Attributes = {**attributes, "gen_ai.provider.name": call.system}
    if call.deadline_left is not None:
        span_attributes["bridge.deadline_left"] = call.deadline_left
    return tracer.start_span(name, kind=SpanKind.CLIENT, attributes=span_attributes)


class _CallWatch:
    """One call: its metrics as they happen, its span's totals at its end."""

    def __init__(self, watcher: OtelWatcher, call: CallInfo) -> None:
        self._w = watcher
        self._attributes = _metric_attributes(call)
        self._span = _start_span(watcher.tracer, call, self._attributes)
        self._started = time.monotonic()
        self._attempts = 0
        self._waited = 0.0
        self._status = 0
        self._usage: tuple[int, int] | None = None
        self._ended = False

    def admitted(self, seconds: float) -> None:
        self._attempts += 1
        self._waited += seconds
        self._w.requests.add(1, self._attributes)
        self._w.wait.record(seconds, self._attributes)

    def answered(self, status: int, seconds: float) -> None:
        self._status = status
        self._w.attempt.record(seconds, {**self._attributes, "http.response.status_code": status})
        if status == 429:
            self._w.rate_limited.add(1, self._attributes)

    def retry(self, reason: str) -> None:
        self._w.retries.add(1, {**self._attributes, "bridge.retry.reason": reason})
        self._span.add_event(
            "bridge.retry", {"bridge.retry.reason": reason, "bridge.attempt": self._attempts}
        )

    def tokens(self, used_in: int, used_out: int) -> None:
        self._usage = (used_in, used_out)

    def end(self, error: BaseException | None) -> None:
        if self._ended:  # a stream's end may be reported after a failure was
            return
        self._ended = True
        failure = _error_type(error, self._status)
        attributes = (
            self._attributes if failure is None else {**self._attributes, "error.type": failure}
        )
        self._w.duration.record(time.monotonic() - self._started, attributes)
        self._record_usage()
        self._end_span(failure)

    def _record_usage(self) -> None:
        if self._usage is None:
            return
        for kind, count in zip(("input", "output"), self._usage, strict=True):
            self._w.tokens.record(count, {**self._attributes, "gen_ai.token.type": kind})

    def _end_span(self, failure: str | None) -> None:
        span = self._span
        span.set_attribute("bridge.attempts", self._attempts)
        span.set_attribute("bridge.admission_wait", self._waited)
        if self._status:
            span.set_attribute("http.response.status_code", self._status)
        if self._usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", self._usage[0])
            span.set_attribute("gen_ai.usage.output_tokens", self._usage[1])
        if failure is not None:
            # The type alone: an exception's message may quote the provider's answer.
            span.set_attribute("error.type", failure)
            span.set_status(Status(StatusCode.ERROR, failure))
        span.end()


def _error_type(error: BaseException | None, status: int) -> str | None:
    """What failed: the exception's class, or the last answer's status when that was an
    error the SDK raises on (the transport hands a final 4xx/5xx back as a response)."""
    if error is not None:
        return type(error).__qualname__
    return str(status) if status >= 400 else None
