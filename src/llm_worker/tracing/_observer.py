"""`RunTrace`: one run as OpenTelemetry spans, and the choice of whether a run is traced at all.

Invariants:
* A run is traced only when `instrument` installed a tracer provider, or the application set a
  global one (not the API's proxy or no-op provider). Otherwise `observer_if_configured` returns
  the worker's no-op observer and no span object is ever created.
* Span tree: ``invoke_agent`` (the run) → ``chat <model>`` per turn, ``hook <point>`` per hook
  point a hook implements, ``execute_tool <name>`` per call, ``llm_worker.cleanup`` after a stop.
  The run span is the current span in the run's task from start to end (attached and detached
  there), and each tool call's span is current while the tool runs — in its task, or in its
  thread for a sync tool (anyio copies the context into the thread) — so spans a tool or a hook
  makes nest under it.
* ``cancel()`` can come from any thread: `_cancel_called` only takes a lock, reads the token's
  cause and adds a span event (or keeps it for the run span, if the run has not started yet).
  Everything else runs in the run's task, never awaits, and never raises into the worker.
* A failure inside tracing is logged and swallowed (`_guarded`): it never changes a run.
* Cancellation is never recorded as an error: an interrupted run's span has status UNSET and
  carries its cause as attributes; a failure (model, tool, hook, a bug) is an ERROR.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import _observe
from .._observe import NO_OBSERVER, RunObserver, ToolCallable
from ..errors import Aborted, Cancelled, RunError
from ..hooks import Hooks, overrides
from ..items import AssistantMessage, ToolResult
from . import _names as names

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from .._runs import Run
    from ..cancel import CancelToken, Cause, Outcome
    from ..hooks import AbortHooksOutcome, HookPoint
    from ..items import Item, ToolCall
    from ..models import Model, ModelRequest
    from ..result import RunStatus
    from ..timeline import Timeline

__all__ = ["RunTrace", "TraceSettings", "observer_if_configured"]

logger = logging.getLogger("llm_worker")
_Method = TypeVar("_Method", bound="Callable[..., Any]")

CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_INSTRUMENTATION = "llm_worker"
_NOT_CONFIGURED = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


class TraceSettings:
    """A tracer and whether message content goes into spans."""

    __slots__ = ("include_content", "tracer")

    def __init__(self, tracer: trace.Tracer, include_content: bool) -> None:
        self.tracer = tracer
        self.include_content = include_content

    def observer(self, run: Run, model: Model) -> RunObserver:
        return RunTrace(run, model, self)


def content_from_environment() -> bool:
    """The GenAI convention's switch for message content (off unless set to ``true``)."""
    return os.environ.get(CONTENT_ENV, "").strip().lower() in ("1", "true", "yes")


def tracer_of(provider: trace.TracerProvider) -> trace.Tracer:
    """The library's tracer from ``provider``."""
    from .. import __version__

    return provider.get_tracer(_INSTRUMENTATION, __version__)


# The global provider can be set once per process: its settings are made once, when first seen.
_global: tuple[trace.TracerProvider, TraceSettings] | None = None


def observer_if_configured(run: Run, model: Model) -> RunObserver:
    """Trace ``run`` when the application set a global tracer provider; else the no-op."""
    global _global
    provider = trace.get_tracer_provider()
    if isinstance(provider, _NOT_CONFIGURED):
        return NO_OBSERVER
    if _global is None or _global[0] is not provider:
        _global = (provider, TraceSettings(tracer_of(provider), content_from_environment()))
    return RunTrace(run, model, _global[1])


def install(settings: TraceSettings | None) -> None:
    """Trace every run with ``settings`` from now on (None: back to the global provider)."""
    _observe.set_observer_factory(settings.observer if settings is not None else None)


def _guarded(method: _Method) -> _Method:
    """A tracing bug is logged, never raised into the run it watches."""

    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception:
            logger.exception("llm_worker.tracing: %s failed; the run goes on", method.__name__)
            return None

    return cast("_Method", guarded)


class RunTrace(RunObserver):
    """The spans of one run (see the module invariants)."""

    __slots__ = (
        "_attached",
        "_cancel_ns",
        "_cleanup",
        "_cleanup_ns",
        "_context",
        "_lock",
        "_model",
        "_noticed_at",
        "_pending_cancels",
        "_phase",
        "_run",
        "_settings",
        "_span",
        "_system",
        "_tool_calls",
        "_tool_spans",
        "_turn_span",
        "_unregister",
    )

    def __init__(self, run: Run, model: Model, settings: TraceSettings) -> None:
        self._run = run
        self._settings = settings
        self._system, self._model = names.system_and_model(model.name)
        self._lock = threading.Lock()
        self._span: trace.Span | None = None
        self._context: otel_context.Context | None = None
        self._attached: object = None
        self._turn_span: trace.Span | None = None
        self._tool_calls: Sequence[ToolCall] = ()
        self._tool_spans: dict[int, trace.Span] = {}
        self._cleanup: trace.Span | None = None
        self._cleanup_ns: tuple[int, int | None] | None = None  # monotonic start, end
        self._cancel_ns: int | None = None  # monotonic time of the first cancel()
        self._pending_cancels: list[tuple[dict[str, names.AttributeValue], int]] = []
        self._phase = "starting"
        self._noticed_at: str | None = None
        # Registered when the run is admitted: a cancel before its first step is seen too.
        self._unregister = run.token.on_cancel(self._cancel_called)

    # -- the run ---------------------------------------------------------------------------------

    @_guarded
    def run_started(self) -> None:
        run = self._run
        attributes: dict[str, names.AttributeValue] = {
            names.OPERATION: "invoke_agent",
            names.AGENT_NAME: _INSTRUMENTATION,
            names.SYSTEM: self._system,
            names.PROVIDER: self._system,
            names.REQUEST_MODEL: self._model,
            names.RUN_ID: run.id,
        }
        if self._settings.include_content and run.input is not None:
            attributes[names.INPUT_MESSAGES] = _user_message(run.input)
        span = self._settings.tracer.start_span(
            "invoke_agent llm_worker", kind=SpanKind.INTERNAL, attributes=attributes
        )
        self._context = trace.set_span_in_context(span)
        self._attached = otel_context.attach(self._context)
        with self._lock:
            self._span = span
            pending, self._pending_cancels = self._pending_cancels, []
        for event_attributes, timestamp in pending:
            span.add_event(names.CANCEL_EVENT, event_attributes, timestamp=timestamp)
        self._phase = "starting the turn"

    @_guarded
    def run_ended(self, status: RunStatus | None, exc: BaseException | None) -> None:
        self._unregister()
        run = self._run
        span = self._span
        if span is None:  # pragma: no cover - the worker always starts before it ends
            return
        ended_ns = time.monotonic_ns()
        self._end_open_tool_spans(run.items)
        if self._turn_span is not None:
            self._turn_span.end()
            self._turn_span = None
        attributes: dict[str, names.AttributeValue] = {names.RUN_TURNS: run.turn}
        attributes.update(names.usage_attributes(run.usage))
        attributes.update(names.kept_attributes(run.items))
        error = run.error
        if status is not None and error is None:
            attributes[names.RUN_OUTCOME] = status
            if run.reason:
                attributes[names.CAUSE_REASON] = run.reason
        elif error is not None:
            attributes.update(self._stop_attributes(error, exc, ended_ns))
        if self._settings.include_content:
            outputs = [item for item in run.items if isinstance(item, AssistantMessage)]
            attributes.update(names.content_attributes(names.OUTPUT_MESSAGES, outputs))
        span.set_attributes(attributes)
        if error is not None and not isinstance(error, Cancelled | Aborted):
            span.set_status(Status(StatusCode.ERROR, str(error.cause)))
        with self._lock:
            self._span = None
        span.end()
        if self._attached is not None:
            otel_context.detach(self._attached)  # type: ignore[arg-type]
            self._attached = None

    def _stop_attributes(
        self, error: RunError, exc: BaseException | None, ended_ns: int
    ) -> dict[str, names.AttributeValue]:
        cause = error.cause
        attributes = names.cause_attributes(cause)
        cancelled = isinstance(error, Cancelled | Aborted)
        outcome = "aborted" if isinstance(error, Aborted) else "cancelled"
        attributes[names.RUN_OUTCOME] = outcome if cancelled else "failed"
        attributes[names.NOTICED_AT] = self._noticed_at or self._phase
        if not cancelled:
            failures = cause.failures()
            failure = failures[0] if failures else error
            attributes[names.ERROR_TYPE] = type(failure).__name__
        if exc is not None and exc is not error:
            attributes["llm_worker.run.raised"] = type(exc).__name__
        if self._cancel_ns is not None:
            attributes[names.CANCEL_LATENCY_MS] = (ended_ns - self._cancel_ns) / 1e6
        if self._cleanup_ns is not None and self._cleanup_ns[1] is not None:
            attributes[names.CLEANUP_MS] = (self._cleanup_ns[1] - self._cleanup_ns[0]) / 1e6
        return attributes

    @_guarded
    def _cancel_called(self) -> None:
        """The run's token was cancelled (any thread): an event at this moment, with its cause."""
        now, moment = time.time_ns(), time.monotonic_ns()
        cause = self._run.token.cause
        attributes: dict[str, names.AttributeValue] = {
            names.CANCEL_THREAD: threading.current_thread().name
        }
        if cause is not None:
            attributes.update(names.cause_attributes(cause))
        with self._lock:
            if self._cancel_ns is None:
                self._cancel_ns = moment
            span = self._span
            if span is None:
                self._pending_cancels.append((attributes, now))
                return
            span.add_event(names.CANCEL_EVENT, attributes, timestamp=now)

    # -- turns -----------------------------------------------------------------------------------

    @_guarded
    def turn_started(self, request: ModelRequest) -> None:
        self._phase = "opening the stream"
        attributes: dict[str, names.AttributeValue] = {
            names.OPERATION: "chat",
            names.SYSTEM: self._system,
            names.PROVIDER: self._system,
            names.REQUEST_MODEL: self._model,
            names.TURN: self._run.turn,
        }
        if self._settings.include_content:
            attributes.update(
                names.content_attributes(names.INPUT_MESSAGES, request.history, request.system)
            )
        self._turn_span = self._settings.tracer.start_span(
            f"chat {self._model}",
            context=self._context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )

    @_guarded
    def turn_ended(self, timeline: Timeline, items: Sequence[Item]) -> None:
        span, self._turn_span = self._turn_span, None
        self._phase = "after the model's answer"
        if span is None:  # pragma: no cover - always paired with turn_started
            return
        self._describe_turn(span, timeline, items)
        span.end()

    def _describe_turn(self, span: trace.Span, timeline: Timeline, items: Sequence[Item]) -> None:
        attributes = names.usage_attributes(timeline.usage)
        if timeline.stop_reason is not None:
            attributes[names.FINISH_REASONS] = (timeline.stop_reason,)
        if timeline.model is not None:
            attributes[names.RESPONSE_MODEL] = names.system_and_model(timeline.model)[1]
        if self._settings.include_content:
            attributes.update(names.content_attributes(names.OUTPUT_MESSAGES, items))
        span.set_attributes(attributes)

    # -- hooks -----------------------------------------------------------------------------------

    def hook(self, point: HookPoint, hooks: Sequence[Hooks]) -> AbstractContextManager[None]:
        if not any(overrides(hook, point) for hook in hooks):
            return super().hook(point, hooks)
        return _HookScope(self, point)

    # -- tools -----------------------------------------------------------------------------------

    def tool_calls(
        self, calls: Sequence[ToolCall], bound: list[ToolCallable]
    ) -> list[ToolCallable]:
        self._phase = "running tools"
        self._tool_calls = calls
        self._tool_spans = {}
        return [self._traced_call(index, call) for index, call in enumerate(bound)]

    def _traced_call(self, index: int, call: ToolCallable) -> ToolCallable:
        """``call`` with its span current while it runs, in its task or in its thread."""
        if inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
            getattr(call, "__call__", None)  # noqa: B004 -- as ConcurrentMap decides
        ):

            async def traced_async(token: CancelToken) -> Any:
                with _current(self._start_tool_span(index, thread=False)):
                    return await call(token)

            return traced_async

        def traced_sync(token: CancelToken) -> Any:
            with _current(self._start_tool_span(index, thread=True)):
                return call(token)

        return traced_sync

    def _start_tool_span(self, index: int, *, thread: bool, keep: bool = True) -> trace.Span:
        call = self._tool_calls[index]
        attributes: dict[str, names.AttributeValue] = {
            names.OPERATION: "execute_tool",
            names.TOOL_NAME: call.name,
            names.TOOL_CALL_ID: call.call_id,
            names.TOOL_TYPE: "function",
        }
        if thread:
            attributes[names.TOOL_THREAD] = threading.current_thread().name
        span = self._settings.tracer.start_span(
            f"execute_tool {call.name}", context=self._context, attributes=attributes
        )
        if keep:
            with self._lock:
                self._tool_spans[index] = span
        return span

    @_guarded
    def tool_ended(self, index: int, result: ToolResult, outcome: Outcome[Any]) -> None:
        with self._lock:
            span = self._tool_spans.pop(index, None)
        if span is None:  # it never started (stopped while it waited for a slot)
            span = self._start_tool_span(index, thread=False, keep=False)
            span.set_attribute("llm_worker.tool.started", False)
        attributes: dict[str, names.AttributeValue] = {names.TOOL_STATUS: result.status}
        if outcome.overran:
            attributes[names.TOOL_OVERRAN] = True
        if result.status == "interrupted":
            attributes[names.TOOL_PARTIAL_CHARS] = len(result.content)
        token = outcome.token
        if token is not None and token.cause is not None and result.status != "ok":
            attributes.update(names.cause_attributes(token.cause))
        if outcome.error is not None:
            attributes[names.ERROR_TYPE] = type(outcome.error).__name__
            span.set_status(Status(StatusCode.ERROR, type(outcome.error).__name__))
        span.set_attributes(attributes)
        span.end()

    def _end_open_tool_spans(self, items: Sequence[Item]) -> None:
        """Calls the run stopped before they ended: their synthetic results say how."""
        with self._lock:
            spans, self._tool_spans = self._tool_spans, {}
        if not spans:
            return
        results = {item.call_id: item for item in items if isinstance(item, ToolResult)}
        for index, span in spans.items():
            result = results.get(self._tool_calls[index].call_id)
            if result is not None:
                span.set_attribute(names.TOOL_STATUS, result.status)
            span.end()

    # -- clean-up --------------------------------------------------------------------------------

    @_guarded
    def cleanup_started(self, cause: Cause, timeline: Timeline | None) -> None:
        self._noticed_at = self._where_noticed(timeline)
        if self._turn_span is not None:
            span, self._turn_span = self._turn_span, None
            span.set_attribute(names.TURN_INTERRUPTED, True)
            if timeline is not None:
                self._describe_turn(span, timeline, ())
            span.end()
        self._cleanup_ns = (time.monotonic_ns(), None)
        self._cleanup = self._settings.tracer.start_span(
            "llm_worker.cleanup", context=self._context, attributes=names.cause_attributes(cause)
        )

    def _where_noticed(self, timeline: Timeline | None) -> str:
        if self._turn_span is None:
            return self._phase
        if timeline is not None and (timeline.blocks or timeline.stop_reason is not None):
            return "streaming"
        return "opening the stream"

    @_guarded
    def cleanup_ended(self, outcome: AbortHooksOutcome) -> None:
        if self._cleanup_ns is not None:
            self._cleanup_ns = (self._cleanup_ns[0], time.monotonic_ns())
        span, self._cleanup = self._cleanup, None
        if span is None:  # pragma: no cover - always paired with cleanup_started
            return
        span.set_attribute(names.CLEANUP_ERRORS, len(outcome.errors))
        for error in outcome.errors:
            span.add_event("llm_worker.cleanup.error", {"error": f"{type(error).__name__}"})
        if outcome.deferred is not None:
            span.set_attribute("llm_worker.cleanup.deferred", type(outcome.deferred).__name__)
        span.end()


class _HookScope:
    """A ``hook <point>`` span around asking the hooks; it records an abort or a failure."""

    __slots__ = ("_attached", "_point", "_previous", "_span", "_trace")

    def __init__(self, run_trace: RunTrace, point: HookPoint) -> None:
        self._trace = run_trace
        self._point = point
        self._span: trace.Span | None = None
        self._attached: object = None
        self._previous = ""

    def __enter__(self) -> None:
        run_trace = self._trace
        self._previous, run_trace._phase = run_trace._phase, f"hook {self._point}"
        self._span = run_trace._settings.tracer.start_span(
            f"hook {self._point}",
            context=run_trace._context,
            attributes={names.HOOK_POINT: self._point},
        )
        self._attached = otel_context.attach(trace.set_span_in_context(self._span))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        assert span is not None
        otel_context.detach(self._attached)  # type: ignore[arg-type]
        if isinstance(exc, RunError):
            span.set_attributes(names.cause_attributes(exc.cause))
            if not isinstance(exc, Aborted):
                span.set_status(Status(StatusCode.ERROR, str(exc.cause)))
        elif exc is not None:
            span.set_attribute("llm_worker.hook.interrupted", True)
        else:
            self._trace._phase = self._previous
        span.end()


class _current:
    """``span`` is the current span inside the block (a tool's own spans nest under it); it is
    ended elsewhere, when the call's outcome is known."""

    __slots__ = ("_attached", "_span")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._attached: object = None

    def __enter__(self) -> None:
        self._attached = otel_context.attach(trace.set_span_in_context(self._span))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        otel_context.detach(self._attached)  # type: ignore[arg-type]


def _user_message(text: str) -> str:
    import json

    return json.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": text}]}], ensure_ascii=False
    )
