"""OpenTelemetry traces of runs that say who stopped what, where, and what was kept.

Built on ``opentelemetry-api`` only (``pip install 'llm-worker[otel]'``). A run is traced when
the application configured a tracer provider — globally (``trace.set_tracer_provider``, or the
``opentelemetry-instrument`` agent) or for llm-worker alone with `instrument`. Without one, no
span is made and the worker does not even import OpenTelemetry.

Spans: ``invoke_agent llm_worker`` per run; ``chat <model>`` per model request (GenAI semantic
conventions: ``gen_ai.system``, ``gen_ai.request.model``, ``gen_ai.usage.*``,
``gen_ai.response.finish_reasons``); ``execute_tool <name>`` per call (a tool's own spans nest
under it, also for sync tools in their thread); ``hook <point>``; ``llm_worker.cleanup`` after a
stop. A stopped run's span carries ``llm_worker.cause.*`` (kind, reason, origin, the tree of a
composition), ``llm_worker.stop.noticed_at``, ``llm_worker.kept.*``, the cancel → return latency
and the clean-up duration, and a ``llm_worker.cancel`` event at the moment ``cancel()`` was
called, from whichever thread. Message content is left out unless ``include_content=True`` (or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``); keys never appear.
"""

from __future__ import annotations

from opentelemetry import trace

from ._observer import TraceSettings, content_from_environment, install, tracer_of
from ._propagation import context_from_headers, traceparent_context

__all__ = [
    "context_from_headers",
    "instrument",
    "traceparent_context",
    "uninstrument",
]


def instrument(
    tracer_provider: trace.TracerProvider | None = None, *, include_content: bool | None = None
) -> None:
    """Trace every run of every worker in this process with ``tracer_provider``.

    ``None`` uses the global provider (as without calling this, but content can be chosen).
    ``include_content`` puts messages into spans (default: the GenAI convention's environment
    variable, else off). Applies to runs started after the call.
    """
    provider = tracer_provider or trace.get_tracer_provider()
    content = content_from_environment() if include_content is None else include_content
    install(TraceSettings(tracer_of(provider), content))


def uninstrument() -> None:
    """Undo `instrument`: runs are traced again only if a global tracer provider is set."""
    install(None)
