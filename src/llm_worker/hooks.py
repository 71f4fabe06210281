"""Hooks: user code at named points of a run, returning a control-flow decision.

Subclass `Hooks` and override the points you need; return ``None`` to continue, or `Skip`,
`Pause` or `Abort`. Every hook is awaited inside the run, so it is a cancellation point like any
other: a cancelled run interrupts a hook at its next await. ``on_abort`` is different: it runs
exactly once for every interrupted run (cancel, hook abort, model error, tool failure, hook
failure, timeout), inside a shielded, time-bounded region, and cannot change the outcome.

Which decisions a point accepts (`ALLOWED`; `call_hook` enforces it):

=====================  =============================================================
``on_prompt_submit``   Abort
``before_llm_request``  Abort, Pause
``before_tool_call``   Skip (the call gets a "skipped" result), Pause, Abort
``after_tool_call``    Abort, Pause
``on_turn_end``        Abort, Pause
``on_text_delta``      Abort
``on_tool_call_delta``  Abort
=====================  =============================================================
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .cancel import CancelToken, Cause, run_cleanup
from .errors import Aborted, CleanupOverran, HookFailed

logger = logging.getLogger("llm_worker")

if TYPE_CHECKING:
    from .items import AssistantMessage, ToolCall, ToolResult, UserMessage
    from .models import ModelRequest
    from .tools import Tool, Toolset


@dataclass(frozen=True)
class Skip:
    """Do not run this tool call; the model sees a "skipped" result with ``reason``."""

    reason: str = "skipped by a hook"


@dataclass(frozen=True)
class Pause:
    """End the run with ``status="paused"``; ``worker.resume()`` continues from here."""

    reason: str = "paused by a hook"


@dataclass(frozen=True)
class Abort:
    """End the run with `Aborted` carrying ``reason``."""

    reason: str


Decision = Skip | Pause | Abort | None


@dataclass
class HookContext:
    """What a hook can see of the run it is called in.

    ``tool(name)`` is the worker's tool of that name (listed MCP tools included), so a
    ``before_tool_call`` hook can read ``ctx.tool(call.name).annotations`` (e.g. ``destructive``).
    """

    run_id: str
    turn: int
    token: CancelToken
    deps: Any = None
    state: dict[str, Any] = field(default_factory=dict)
    tools: Toolset | None = field(default=None, repr=False)

    def tool(self, name: str) -> Tool[..., Any] | None:
        """The tool the model calls ``name``, or None."""
        return self.tools.get(name) if self.tools is not None else None


class Hooks:
    """Base class: every point is a no-op that continues. Override what you need."""

    async def on_prompt_submit(self, ctx: HookContext, message: UserMessage) -> Decision:
        return None

    async def before_llm_request(self, ctx: HookContext, request: ModelRequest) -> Decision:
        return None

    async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> Decision:
        return None

    async def after_tool_call(
        self, ctx: HookContext, call: ToolCall, result: ToolResult
    ) -> Decision:
        return None

    async def on_turn_end(self, ctx: HookContext, message: AssistantMessage | None) -> Decision:
        return None

    async def on_text_delta(self, ctx: HookContext, text: str) -> Decision:
        return None

    async def on_tool_call_delta(self, ctx: HookContext, index: int, arguments: str) -> Decision:
        return None

    async def on_abort(self, ctx: HookContext, reason: str, cause: Cause) -> None:
        """Called once per interrupted run, shielded and time-bounded; exceptions are reported."""
        return None


def overrides(hooks: Hooks, point: str) -> bool:
    """True if ``hooks`` implements ``point`` (so the worker can skip no-op calls on hot paths)."""
    return getattr(type(hooks), point) is not getattr(Hooks, point)


HookPoint = Literal[
    "on_prompt_submit",
    "before_llm_request",
    "before_tool_call",
    "after_tool_call",
    "on_turn_end",
    "on_text_delta",
    "on_tool_call_delta",
]
ALLOWED: dict[HookPoint, tuple[type, ...]] = {
    "on_prompt_submit": (Abort,),
    "before_llm_request": (Abort, Pause),
    "before_tool_call": (Abort, Pause, Skip),
    "after_tool_call": (Abort, Pause),
    "on_turn_end": (Abort, Pause),
    "on_text_delta": (Abort,),
    "on_tool_call_delta": (Abort,),
}


async def decide(
    hooks: Sequence[Hooks], point: HookPoint, ctx: HookContext, *args: Any
) -> Decision:
    """Ask every hook implementing ``point``, in order; the first decision not None wins.

    Cancellation: each hook is awaited in the caller's task, so a cancelled run interrupts it at
    its next await like any other code of the run.
    """
    for hook in hooks:
        if overrides(hook, point):
            decision = await call_hook(hook, point, ctx, *args)
            if decision is not None:
                return decision
    return None


async def call_hook(hook: Hooks, point: HookPoint, ctx: HookContext, *args: Any) -> Decision:
    """Call one hook; return its Skip or Pause, raise `Aborted` for Abort, `HookFailed` else.

    A hook that raises, or returns a decision ``point`` does not accept, fails the run with
    `HookFailed` (the hook's exception is its ``__cause__``). Cancellation: as `decide`.
    """
    name = f"{type(hook).__name__}.{point}"
    try:
        decision: Decision = await getattr(hook, point)(ctx, *args)
    except Exception as exc:
        cause = Cause.failure(exc, origin=f"hook {name}")
        raise HookFailed(f"hook {name} raised {exc!r}", cause=cause) from exc
    if decision is None:
        return None
    if not isinstance(decision, ALLOWED[point]):
        error = TypeError(f"{type(decision).__name__} is not a valid decision for {point}")
        raise HookFailed(f"hook {name}: {error}", cause=Cause.failure(error, origin=name))
    if isinstance(decision, Abort):
        cause = Cause.interrupt("aborted", decision.reason, origin=f"hook {name}")
        raise Aborted(f"aborted by hook {name}: {decision.reason}", cause=cause)
    return decision


@dataclass
class AbortHooksOutcome:
    """What the ``on_abort`` hooks left: their failures and overruns (reported, never raised),
    and a cancellation of the caller that arrived while they ran (re-raised by the worker)."""

    errors: list[BaseException] = field(default_factory=list)
    deferred: BaseException | None = None


async def run_abort_hooks(
    hooks: Sequence[Hooks], ctx: HookContext, cause: Cause, timeout: float | None
) -> AbortHooksOutcome:
    """Run every ``on_abort`` hook once, in order, each in its own shielded region bounded by
    ``timeout`` (`run_cleanup`): a hook that hangs delays, but never silences, the ones after it.

    Cancellation: nothing here can be cut by a cancellation of the caller; one that arrives is
    returned as ``deferred``.
    """
    outcome = AbortHooksOutcome()
    reason = cause.reason or str(cause)
    for hook in hooks:
        if not overrides(hook, "on_abort"):
            continue
        name = f"on_abort hook {type(hook).__name__}"
        ran = await run_cleanup(
            functools.partial(hook.on_abort, ctx, reason, cause), timeout=timeout, what=name
        )
        if ran.error is not None:
            logger.error("%s raised %r", name, ran.error, exc_info=ran.error)
            outcome.errors.append(ran.error)
        if ran.overran:
            state = "was abandoned" if ran.abandoned else "was cancelled"
            bound = f"{timeout or 0:g}s"
            outcome.errors.append(CleanupOverran(f"{name} overran its {bound} bound; {state}"))
        outcome.deferred = outcome.deferred or ran.deferred
    return outcome
