"""bridge.otel: metrics and spans of real calls, through the official SDKs, over real HTTP.

The SDK's in-memory reader and exporter take what a real exporter would be given; each
test has its own providers and its own API key (so its own endpoint). The counts are
checked against the simulated server's own ``stats()`` and the SDK's replies.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import bridge
import bridge.otel
from bridge.testing import SimulatedServer

openai = pytest.importorskip("openai")
pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402 - after the skip
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

pytestmark = pytest.mark.slow

USER = [{"role": "user", "content": "hi"}]
#: Waits the server's retry-after would impose, capped so that the tests take no time.
QUICK = bridge.Retry(attempts=6, backoff=0, max_wait=0.01)
OPEN = bridge.Limits(rpm=None, tpm=None)


class Telemetry:
    """An SDK meter and tracer provider, instrumented, and what they recorded."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, kind: SpanKind = SpanKind.CLIENT) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.kind == kind]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def total(self, name: str, **attributes: object) -> float:
        """A counter's sum, or a histogram's count, over the points with ``attributes``."""
        chosen = [p for p in self.points(name) if _has(p.attributes, attributes)]
        return sum(p.value if hasattr(p, "value") else p.count for p in chosen)

    def histogram_sum(self, name: str, **attributes: object) -> float:
        return sum(p.sum for p in self.points(name) if _has(p.attributes, attributes))


def _has(attributes: Any, wanted: dict[str, object]) -> bool:
    return all(attributes.get(k.replace("__", ".")) == v for k, v in wanted.items())


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    bridge.otel.instrument(meter_provider=telemetry.meters, tracer_provider=telemetry.tracers)
    yield telemetry
    bridge.otel.uninstrument()
    telemetry.meters.shutdown()
    telemetry.tracers.shutdown()


def new_key() -> str:
    return f"sk-test-{uuid.uuid4().hex}"


def client(server: SimulatedServer, key: str | None = None, **options: Any) -> Any:
    options.setdefault("retry", QUICK)
    options.setdefault("limits", OPEN)
    return bridge.openai(base_url=server.base_url, api_key=key or new_key(), **options)


async def chat(llm: Any, text: str = "hi") -> Any:
    return await llm.chat.completions.create(
        model="m", messages=[{"role": "user", "content": text}]
    )


# -- the workload of the issue: N calls, K injected 429s ----------------------------------------


@pytest.mark.llm_server(error_rates={429: 0.3}, seed=11)
def test_a_workload_counts_what_the_server_saw(
    b: bridge.Bridge, otel: Telemetry, llm_server: SimulatedServer
) -> None:
    calls = 20
    llm = client(llm_server)
    replies = [b.run(chat(llm, f"question {i}")) for i in range(calls)]  # in order: seeded
    b.run(llm.close())
    server = llm_server.stats()
    rate_limited = server["status_counts"].get("429", 0)
    assert rate_limited == server["faults"]["status:429"] > 0  # injected, all of them
    assert server["status_counts"]["200"] == calls
    # Attempts: as many as the server answered, 429s and retries as many as it sent 429s.
    assert otel.total("bridge.requests") == server["requests"] == calls + rate_limited
    assert otel.total("bridge.rate_limited") == rate_limited
    assert otel.total("bridge.retries") == rate_limited
    assert otel.total("bridge.retries", bridge__retry__reason="HTTP 429") == rate_limited
    assert otel.total("bridge.admission.wait") == calls + rate_limited
    assert otel.total("bridge.attempt.duration", http__response__status_code=429) == rate_limited
    assert 0 < otel.total("bridge.pauses") <= rate_limited
    # Calls: one operation each, none failed, tokens as the SDK read them.
    assert otel.total("gen_ai.client.operation.duration") == calls
    assert not [
        p for p in otel.points("gen_ai.client.operation.duration") if "error.type" in p.attributes
    ]
    used_in = sum(r.usage.prompt_tokens for r in replies)
    used_out = sum(r.usage.completion_tokens for r in replies)
    assert otel.histogram_sum("gen_ai.client.token.usage", gen_ai__token__type="input") == used_in
    assert otel.histogram_sum("gen_ai.client.token.usage", gen_ai__token__type="output") == used_out
    assert otel.total("gen_ai.client.token.usage") == 2 * calls

    spans = otel.spans()
    assert len(spans) == calls
    assert sum(s.attributes["bridge.attempts"] for s in spans) == calls + rate_limited
    assert sum(s.attributes["gen_ai.usage.input_tokens"] for s in spans) == used_in
    assert sum(s.attributes["gen_ai.usage.output_tokens"] for s in spans) == used_out
    assert sum(len(s.events) for s in spans) == rate_limited  # a bridge.retry event each
    for span in spans:
        assert span.name == "chat m"
        assert span.status.status_code == StatusCode.UNSET
        assert span.attributes["gen_ai.system"] == "openai"
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.request.model"] == "m"
        assert span.attributes["bridge.lane"] == "interactive"
        assert span.attributes["bridge.admission_wait"] >= 0
        assert "bridge.deadline_left" not in span.attributes


def test_the_endpoint_attribute_is_the_one_bridge_stats_shows(
    b: bridge.Bridge, otel: Telemetry, llm_server: SimulatedServer
) -> None:
    llm = client(llm_server)
    b.run(chat(llm))
    b.run(llm.close())
    (span,) = otel.spans()
    endpoint = span.attributes["bridge.endpoint"]
    assert endpoint in bridge.stats()
    (point,) = otel.points("bridge.requests")
    assert point.attributes["bridge.endpoint"] == endpoint


# -- context: parent span, lane, deadline ---------------------------------------------------------


def test_a_span_around_bridge_run_is_the_parent(otel: Telemetry, llm_server: SimulatedServer):
    tracer = otel.tracers.get_tracer("test")
    llm = client(llm_server)
    with tracer.start_as_current_span("view") as view:
        bridge.run(chat(llm))
        bridge.gather(chat(llm), chat(llm))
        asyncio.run(chat(llm))  # from a loop of the caller's: sent on the bridge's
    bridge.run(chat(llm))  # no span around it: a root
    bridge.run(llm.close())
    spans = otel.spans()
    assert len(spans) == 5
    children = [s for s in spans if s.parent is not None]
    assert len(children) == 4
    for span in children:
        assert span.parent.span_id == view.get_span_context().span_id
        assert span.context.trace_id == view.get_span_context().trace_id


def test_the_batch_lane_and_the_deadline_are_attributes(
    b: bridge.Bridge, otel: Telemetry, llm_server: SimulatedServer
) -> None:
    llm = client(llm_server)
    with bridge.priority("batch"), bridge.deadline(300):
        b.run(chat(llm))
    b.run(chat(llm))
    b.run(llm.close())
    batch, interactive = otel.spans()
    assert batch.attributes["bridge.lane"] == "batch"
    assert 0 < batch.attributes["bridge.deadline_left"] <= 300
    assert interactive.attributes["bridge.lane"] == "interactive"
    assert "bridge.deadline_left" not in interactive.attributes
    assert otel.total("bridge.requests", bridge__lane="batch") == 1
    assert otel.total("bridge.requests", bridge__lane="interactive") == 1


# -- failures -------------------------------------------------------------------------------


@pytest.mark.llm_server(error_rates={400: 1.0})
def test_a_failed_call_has_an_error_span(
    b: bridge.Bridge, otel: Telemetry, llm_server: SimulatedServer
) -> None:
    llm = client(llm_server)
    with pytest.raises(openai.BadRequestError):
        b.run(chat(llm))
    b.run(llm.close())
    (span,) = otel.spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "400"
    assert span.attributes["bridge.attempts"] == 1  # a 400 is not retried
    (point,) = otel.points("gen_ai.client.operation.duration")
    assert point.attributes["error.type"] == "400"


def test_a_connection_failure_names_its_exception(b: bridge.Bridge, otel: Telemetry) -> None:
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm = bridge.openai(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=new_key(),
        retry=bridge.Retry(attempts=2, backoff=0), limits=OPEN,
    )  # fmt: skip
    with pytest.raises(openai.APIConnectionError):
        b.run(chat(llm))
    b.run(llm.close())
    (span,) = otel.spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"].endswith("Error")
    assert span.attributes["bridge.attempts"] == 2
    assert otel.total("bridge.retries") == 1


# -- anthropic, secrets ------------------------------------------------------------------------


def test_an_anthropic_call(b: bridge.Bridge, otel: Telemetry, llm_server: SimulatedServer):
    anthropic = pytest.importorskip("anthropic")
    assert anthropic
    llm = bridge.anthropic(base_url=llm_server.root_url, api_key=new_key(), limits=OPEN)
    reply = b.run(llm.messages.create(model="c", max_tokens=20, messages=USER))
    b.run(llm.close())
    (span,) = otel.spans()
    assert span.name == "chat c"
    assert span.attributes["gen_ai.system"] == "anthropic"
    assert span.attributes["gen_ai.usage.input_tokens"] == reply.usage.input_tokens
    assert span.attributes["gen_ai.usage.output_tokens"] == reply.usage.output_tokens
    assert otel.total("bridge.requests", gen_ai__system="anthropic") == 1


def test_no_key_password_or_prompt_in_any_attribute(
    b: bridge.Bridge, otel: Telemetry, llm_server: SimulatedServer
) -> None:
    key, password, prompt = new_key(), "pw-" + uuid.uuid4().hex, "prompt-" + uuid.uuid4().hex
    base_url = llm_server.base_url.replace("http://", f"http://user:{password}@")
    llm = bridge.openai(base_url=base_url, api_key=key, limits=OPEN, transport="httpx")
    b.run(chat(llm, prompt))
    b.run(llm.close())
    (span,) = otel.spans()
    values = [str(v) for v in span.attributes.values()]
    for name in ("bridge.requests", "gen_ai.client.operation.duration", "bridge.admission.wait"):
        values += [str(v) for p in otel.points(name) for v in p.attributes.values()]
    seen = " ".join(values)
    assert "127.0.0.1" in seen  # the endpoint is there, redacted
    for secret in (key, password, prompt):
        assert secret not in seen


# -- on and off ---------------------------------------------------------------------------------


def test_uninstrument_stops_recording_and_instrument_twice_records_once(
    b: bridge.Bridge, otel: Telemetry, llm_server: SimulatedServer
) -> None:
    llm = client(llm_server)
    bridge.otel.instrument(meter_provider=otel.meters, tracer_provider=otel.tracers)
    b.run(chat(llm))
    assert otel.total("bridge.requests") == 1
    bridge.otel.uninstrument()
    bridge.otel.uninstrument()  # idempotent
    b.run(chat(llm))
    b.run(llm.close())
    assert otel.total("bridge.requests") == 1
    assert len(otel.spans()) == 1
    assert llm_server.stats()["requests"] == 2


def test_import_bridge_imports_no_opentelemetry() -> None:
    probe = (
        "import sys, bridge, bridge.otel; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
