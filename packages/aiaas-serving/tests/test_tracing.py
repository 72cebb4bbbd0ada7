"""Traces: one span per batch, linked to the spans its requests were submitted under."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from toy import POISON, ToyAdapter

from aiaas_serving import BatchPolicy, ModelError, Runtime, SyncRuntime


@pytest.fixture
def tracing():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def test_a_batch_span_links_every_request_span(tracing) -> None:
    provider, exporter = tracing
    tracer = provider.get_tracer("test")
    async with Runtime(device="cpu", tracer_provider=provider) as runtime:
        model = await runtime.add_model("toy", ToyAdapter(), policy=BatchPolicy(buckets=(64,)))

        async def call(i: int) -> trace.SpanContext:
            with tracer.start_as_current_span(f"request-{i}") as span:
                await model.submit([i + 1, 2])
                return span.get_span_context()

        contexts = await asyncio.gather(*(call(i) for i in range(4)))
        await model.submit([5])  # no current span: nothing to link
    batches = [s for s in exporter.get_finished_spans() if s.name == "aiaas_serving.batch"]
    assert len(batches) == 2
    first = batches[0]
    assert {link.context.span_id for link in first.links} == {c.span_id for c in contexts}
    assert first.parent is None  # a batch belongs to no single request
    assert first.attributes["aiaas_serving.model"] == "toy"
    assert first.attributes["aiaas_serving.batch.size"] == 4
    assert first.attributes["aiaas_serving.batch.padded_tokens"] == 8
    assert first.attributes["aiaas_serving.batch.tokens"] == 8
    assert first.attributes["aiaas_serving.batch.forwards"] == 1
    assert first.attributes["aiaas_serving.device"] == "cpu"
    assert batches[1].links == ()


async def test_a_failing_batch_records_its_splits_and_an_error_status(tracing) -> None:
    provider, exporter = tracing
    async with Runtime(device="cpu", tracer_provider=provider) as runtime:
        model = await runtime.add_model("toy", ToyAdapter())
        results = await asyncio.gather(
            model.submit([POISON]), model.submit([2]), return_exceptions=True
        )
        assert isinstance(results[0], ModelError)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "aiaas_serving.batch"]
    assert span.status.status_code == trace.StatusCode.ERROR
    assert span.attributes["aiaas_serving.batch.failed"] == 1
    assert span.attributes["aiaas_serving.batch.forwards"] == 3
    assert [e.name for e in span.events] == ["aiaas_serving.batch.split"]


def test_sync_callers_spans_travel_with_their_requests(tracing) -> None:
    provider, exporter = tracing
    tracer = provider.get_tracer("test")
    with SyncRuntime(device="cpu", tracer_provider=provider) as runtime:
        runtime.add_model("toy", ToyAdapter())
        with tracer.start_as_current_span("caller") as span:
            runtime.submit("toy", [1])
            caller = span.get_span_context()
    (batch,) = [s for s in exporter.get_finished_spans() if s.name == "aiaas_serving.batch"]
    assert [link.context.span_id for link in batch.links] == [caller.span_id]
