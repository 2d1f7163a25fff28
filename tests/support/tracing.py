"""Spans the test process finishes, kept in memory. OpenTelemetry lets a process set its tracer
provider once: the first module that asks sets an SDK provider, and every module adds its own
exporter to it, so the modules that look at spans can run in any order in one session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@contextmanager
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """Every span finished from now until the block ends (then no more are kept)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider), "another kind of tracer provider is set in this process"
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        exporter.clear()
        exporter.shutdown()  # the processor stays (a provider cannot drop one); it keeps nothing now
