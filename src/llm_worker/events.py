"""Events: what providers stream (normalised) and what a run reports to UIs.

Stream events come from a model, one per provider chunk that matters: text and reasoning deltas,
tool-call start / argument delta / end, usage, stop reason, error, retry. Run events come from
the worker: turn start/end, tool started/finished, item committed, run finished/cancelled/failed.
Both are pydantic models with a ``type`` tag, so a UI can ``match`` on them or serialise them as
JSON lines. Providers build stream events on the hot path, so they carry no validators.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .items import Item, ToolResult, Usage


class _Event(BaseModel):
    # built at first use: most runs meet a handful of the event kinds (start-up cost)
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


# -- stream events (provider → worker) ----------------------------------------------------------


class TextDelta(_Event):
    type: Literal["text_delta"] = "text_delta"
    text: str


class ReasoningStart(_Event):
    """A reasoning block opens; opaque provider data that arrives up front rides along."""

    type: Literal["reasoning_start"] = "reasoning_start"
    provider: str | None = None
    provider_id: str | None = None
    redacted_data: str | None = None
    encrypted_content: str | None = None


class ReasoningDelta(_Event):
    type: Literal["reasoning_delta"] = "reasoning_delta"
    text: str


class ReasoningEnd(_Event):
    """A reasoning block closes; signature or encrypted content often arrives only now."""

    type: Literal["reasoning_end"] = "reasoning_end"
    signature: str | None = None
    encrypted_content: str | None = None


class ToolCallStart(_Event):
    """The model starts a tool call; ``index`` identifies it among this response's calls."""

    type: Literal["tool_call_start"] = "tool_call_start"
    index: int
    call_id: str
    name: str
    provider_id: str | None = None


class ToolCallDelta(_Event):
    type: Literal["tool_call_delta"] = "tool_call_delta"
    index: int
    arguments: str


class ToolCallEnd(_Event):
    """The call's arguments are complete (only then may it run)."""

    type: Literal["tool_call_end"] = "tool_call_end"
    index: int


class UsageUpdate(_Event):
    type: Literal["usage"] = "usage"
    usage: Usage


class StopReason(_Event):
    """Why the model stopped: ``end_turn``, ``tool_use``, ``max_tokens``, ``refusal``, …"""

    type: Literal["stop"] = "stop"
    reason: str


class StreamError(_Event):
    """An error the provider reported inside the stream; the worker turns it into ModelError."""

    type: Literal["error"] = "error"
    message: str
    code: str | None = None
    retryable: bool = False


class AnsweredBy(_Event):
    """Which model answers this response (a `FallbackModel` says so before its first content);
    the assistant message records it (``AssistantMessage.model``)."""

    type: Literal["answered_by"] = "answered_by"
    model: str


class Retrying(_Event):
    """A transient provider error; the request is retried after ``delay`` seconds."""

    type: Literal["retrying"] = "retrying"
    attempt: int
    delay: float
    error: str


StreamEvent = Annotated[
    TextDelta
    | ReasoningStart
    | ReasoningDelta
    | ReasoningEnd
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | UsageUpdate
    | StopReason
    | StreamError
    | Retrying
    | AnsweredBy,
    Field(discriminator="type"),
]


# -- run events (worker → UI) -------------------------------------------------------------------


class RunStarted(_Event):
    type: Literal["run_started"] = "run_started"
    run_id: str


class TurnStarted(_Event):
    type: Literal["turn_started"] = "turn_started"
    turn: int


class TurnEnded(_Event):
    type: Literal["turn_ended"] = "turn_ended"
    turn: int


class ItemCommitted(_Event):
    """An item was appended to the history (and persisted, with a store)."""

    type: Literal["item"] = "item"
    item: Item


class ToolStarted(_Event):
    type: Literal["tool_started"] = "tool_started"
    call_id: str
    name: str
    arguments: dict[str, object]


class ToolFinished(_Event):
    type: Literal["tool_finished"] = "tool_finished"
    result: ToolResult


class ToolProgress(_Event):
    """A running tool reported progress (an MCP server's progress notification, or
    `ToolContext.report_progress`); its messages are kept as the call's partial output."""

    type: Literal["tool_progress"] = "tool_progress"
    call_id: str
    name: str
    progress: float
    total: float | None = None
    message: str | None = None


class OutputDelta(_Event):
    """The structured output as it grows (runs with an ``output_type``, streamed).

    ``value`` is the object validated from the JSON streamed so far: an instance of the output
    type once what came validates as one, else of its partial twin (every field optional).
    """

    type: Literal["output_delta"] = "output_delta"
    value: Any


class ToolOverran(_Event):
    """A tool still runs a grace period after it was cancelled hard: it swallows cancellation.

    The run waits for it (an async task cannot be abandoned); this says why the run is slow.
    """

    type: Literal["tool_overran"] = "tool_overran"
    call_id: str
    name: str


class RunFinished(_Event):
    type: Literal["run_finished"] = "run_finished"
    status: Literal["finished", "paused", "limit_reached"]
    output: str
    reason: str | None = None  # why it paused or hit the turn limit
    run_id: str = ""


class RunCancelled(_Event):
    type: Literal["run_cancelled"] = "run_cancelled"
    kind: str
    reason: str | None
    cause: str
    run_id: str = ""
    cleanup_errors: list[str] = Field(default_factory=list)  # on_abort failures and overruns


class RunFailed(_Event):
    type: Literal["run_failed"] = "run_failed"
    error: str
    cause: str
    kind: str = "failure"
    run_id: str = ""
    cleanup_errors: list[str] = Field(default_factory=list)  # on_abort failures and overruns


RunBoundary = RunStarted | RunFinished | RunCancelled | RunFailed


RunEvent = Annotated[
    RunStarted
    | TurnStarted
    | TurnEnded
    | ItemCommitted
    | ToolStarted
    | ToolFinished
    | ToolProgress
    | ToolOverran
    | OutputDelta
    | RunFinished
    | RunCancelled
    | RunFailed,
    Field(discriminator="type"),
]

Event = Annotated[
    TextDelta
    | ReasoningStart
    | ReasoningDelta
    | ReasoningEnd
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | UsageUpdate
    | StopReason
    | StreamError
    | Retrying
    | AnsweredBy
    | RunStarted
    | TurnStarted
    | TurnEnded
    | ItemCommitted
    | ToolStarted
    | ToolFinished
    | ToolProgress
    | ToolOverran
    | OutputDelta
    | RunFinished
    | RunCancelled
    | RunFailed,
    Field(discriminator="type"),
]
