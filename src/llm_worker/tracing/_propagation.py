"""Trace context from another process: a W3C ``traceparent`` on a request becomes the parent of
the runs it starts.

Invariants:
* Extraction uses the globally configured propagator (W3C trace context and baggage unless
  ``OTEL_PROPAGATORS`` says otherwise), so a service agrees with the rest of the application.
* `traceparent_context` attaches the extracted context for the block and detaches it in the same
  task; runs started inside (their tasks inherit it) become children of the remote span.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate

__all__ = ["context_from_headers", "traceparent_context"]


def context_from_headers(headers: Mapping[str, str]) -> otel_context.Context:
    """The trace context ``headers`` carry (``traceparent``, ``tracestate``, ``baggage``)."""
    return propagate.extract({name.lower(): value for name, value in headers.items()})


@contextmanager
def traceparent_context(headers: Mapping[str, str]) -> Iterator[None]:
    """Inside the block, the context ``headers`` carry is current. Cancellation: plain."""
    attached = otel_context.attach(context_from_headers(headers))
    try:
        yield
    finally:
        otel_context.detach(attached)
