"""Tracing tests: an SDK tracer provider with an in-memory exporter, installed for one test.

`traced` installs it with `llm_worker.tracing.instrument` (not as the global provider, which can
be set once per process) and removes it after the test, so other tests run untraced.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_worker import tracing


class Spans:
    """The finished spans of one test, by name and by parent."""

    def __init__(self, exporter: InMemorySpanExporter, provider: TracerProvider) -> None:
        self.exporter = exporter
        self.provider = provider

    @property
    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [span for span in self.all if span.name.startswith(prefix)]

    def one(self, prefix: str) -> ReadableSpan:
        found = self.named(prefix)
        assert len(found) == 1, [span.name for span in self.all]
        return found[0]

    @property
    def run(self) -> ReadableSpan:
        return self.one("invoke_agent")

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        assert parent.context is not None
        return [
            span
            for span in self.all
            if span.parent is not None and span.parent.span_id == parent.context.span_id
        ]

    def child_names(self, parent: ReadableSpan) -> list[str]:
        return [span.name for span in sorted(self.children(parent), key=_start)]


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


@pytest.fixture
def spans() -> Iterator[Spans]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument(provider)
    try:
        yield Spans(exporter, provider)
    finally:
        tracing.uninstrument()
        provider.shutdown()


@pytest.fixture
def spans_with_content() -> Iterator[Spans]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument(provider, include_content=True)
    try:
        yield Spans(exporter, provider)
    finally:
        tracing.uninstrument()
        provider.shutdown()
