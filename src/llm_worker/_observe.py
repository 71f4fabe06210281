"""The one seam through which a run can be watched (tracing): `RunObserver` and who supplies it;
and `incoming_trace`, the front ends' gate to a caller's trace context.

Invariants:
* Every method of the base `RunObserver` does nothing and returns at once: an unwatched run pays
  one attribute call per seam point (a handful per turn, never one per stream event).
* Observer methods are synchronous and never await, so they add no cancellation point to a run;
  they must not raise (an implementation catches its own errors) and must not touch the history.
* `observer_for` never imports OpenTelemetry: `llm_worker.tracing` is imported only when it was
  installed as the factory (``llm_worker.tracing.instrument()``) or when the application already
  imported ``opentelemetry.trace`` (then a tracer provider may be configured; the tracing package
  decides, per run, whether it is).
* `incoming_trace` imports nothing either unless this process traces and the request carries a
  ``traceparent``.
* Every method is called in the run's own task. A ``cancel()`` from any thread reaches an
  observer through the run's token (``run.token.on_cancel``), registered when it is made.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._runs import Run
    from .cancel import CancelToken, Cause, Outcome
    from .hooks import AbortHooksOutcome, HookPoint, Hooks
    from .items import Item, ToolCall, ToolResult
    from .models import Model, ModelRequest
    from .result import RunStatus
    from .timeline import Timeline

__all__ = [
    "NO_OBSERVER",
    "RunObserver",
    "incoming_trace",
    "observer_for",
    "set_observer_factory",
]

ToolCallable = Callable[["CancelToken"], Any]
ObserverFactory = Callable[["Run", "Model"], "RunObserver"]

_NOTHING: AbstractContextManager[None] = nullcontext()


class RunObserver:
    """Watches one run; the base class watches nothing. `llm_worker.tracing` subclasses it."""

    __slots__ = ()

    def run_started(self) -> None:
        """The run began executing (its ``RunStarted`` boundary)."""

    def turn_started(self, request: ModelRequest) -> None:
        """A model request is about to be opened."""

    def turn_ended(self, timeline: Timeline, items: Sequence[Item]) -> None:
        """The model's stream ended normally and ``items`` were committed."""

    def hook(self, point: HookPoint, hooks: Sequence[Hooks]) -> AbstractContextManager[None]:
        """A scope around asking ``hooks`` at ``point`` (entered and left in the run's task)."""
        return _NOTHING

    def tool_calls(
        self, calls: Sequence[ToolCall], bound: list[ToolCallable]
    ) -> list[ToolCallable]:
        """The callables to run for ``calls`` (wrapped so that a tool's own work nests)."""
        return bound

    def tool_ended(self, index: int, result: ToolResult, outcome: Outcome[Any]) -> None:
        """Call ``index`` of the last `tool_calls` ended with ``result``."""

    def cleanup_started(self, cause: Cause, timeline: Timeline | None) -> None:
        """The run was interrupted; clean-up begins (``timeline``: the turn cut off, if any)."""

    def cleanup_ended(self, outcome: AbortHooksOutcome) -> None:
        """Clean-up (history repair and ``on_abort`` hooks) is done."""

    def run_ended(self, status: RunStatus | None, exc: BaseException | None) -> None:
        """The run's end: ``status`` when it returned a result, else ``exc``, what it raises."""


NO_OBSERVER = RunObserver()

_factory: ObserverFactory | None = None
_detect: ObserverFactory | None = None  # OpenTelemetry's global provider, once imported


def set_observer_factory(factory: ObserverFactory | None) -> None:
    """Install (or, with None, remove) the factory that watches every run from now on."""
    global _factory
    _factory = factory


def observer_for(run: Run, model: Model) -> RunObserver:
    """The observer of a new run: the installed factory's, OpenTelemetry's when the application
    configured a tracer provider, else the no-op one."""
    if _factory is not None:
        return _factory(run, model)
    if "opentelemetry.trace" not in sys.modules:  # nobody configured tracing: import nothing
        return NO_OBSERVER
    global _detect
    if _detect is None:
        try:
            from .tracing._observer import observer_if_configured
        except ImportError:  # pragma: no cover - a broken or partial OpenTelemetry install
            return NO_OBSERVER
        _detect = observer_if_configured
    return _detect(run, model)


def incoming_trace(headers: Sequence[tuple[bytes, bytes]]) -> AbstractContextManager[None]:
    """For a front end: the trace context of a request's W3C ``traceparent`` header, current
    inside the block — when the request has one and this process traces; else nothing."""
    if _factory is None and "opentelemetry.trace" not in sys.modules:
        return _NOTHING
    carried = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in headers
        if name.lower() in (b"traceparent", b"tracestate", b"baggage")
    }
    if "traceparent" not in carried:
        return _NOTHING
    try:
        from .tracing._propagation import traceparent_context
    except ImportError:  # pragma: no cover - a broken or partial OpenTelemetry install
        return _NOTHING
    return traceparent_context(carried)
