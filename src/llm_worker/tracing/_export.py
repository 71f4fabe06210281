"""Exporting a process's spans: to a JSON-lines file (`llm-worker trace FILE` prints it) or to
an OTLP/HTTP endpoint. Needs ``opentelemetry-sdk`` (``pip install 'llm-worker[otel-export]'``);
only the command line's ``--trace`` imports this module.

Invariants:
* One span per line, the SDK's own JSON form (``ReadableSpan.to_json``), appended: several
  commands may share a file, and a line is written whole or not at all (one write under a lock).
* `start_export` installs the provider for llm-worker's runs and as the global provider (so the
  spans of tools and libraries join the same trace); `ExportHandle.close` flushes and shuts it
  down, so nothing is lost when the command exits normally. An OTLP export that cannot reach its
  collector gives up after `_EXIT_BOUND` seconds unless ``OTEL_EXPORTER_OTLP_*TIMEOUT`` says
  otherwise (the spans are then lost, with a warning on stderr).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import IO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from . import instrument, uninstrument

__all__ = ["OTLP", "ExportHandle", "JsonLinesExporter", "start_export"]

OTLP = "otlp"
# An unreachable collector must not hold a command's exit for the exporter's default 10 s.
_EXIT_BOUND = 3.0
_TIMEOUT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to ``path`` as one line of JSON."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115 - owned

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        text = "".join(span.to_json(indent=None) + "\n" for span in spans)
        with self._lock:
            if self._file is None:
                return SpanExportResult.FAILURE
            self._file.write(text)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class ExportHandle:
    """The provider `start_export` installed; `close` flushes and removes it."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider

    def close(self) -> None:
        """Flush every span and shut the exporter down. Cancellation: plain (synchronous)."""
        uninstrument()
        self.provider.shutdown()


def start_export(target: str, *, include_content: bool) -> ExportHandle:
    """Trace runs to ``target``: a file path (JSON lines) or ``"otlp"`` (OTLP/HTTP, configured
    by the standard ``OTEL_EXPORTER_OTLP_*`` variables)."""
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "llm-worker")})
    provider = TracerProvider(resource=resource)
    if target == OTLP:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        configured = any(name in os.environ for name in _TIMEOUT_VARIABLES)
        exporter = OTLPSpanExporter() if configured else OTLPSpanExporter(timeout=_EXIT_BOUND)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    else:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(target)))
    trace.set_tracer_provider(provider)
    instrument(provider, include_content=include_content)
    return ExportHandle(provider)
