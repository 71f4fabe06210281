"""llm-worker run events → AI SDK UI message stream chunks (protocol v1, as ``useChat`` reads it).

Invariants:
* The chunks of one response obey the order the SDK's reader requires: ``start`` first; every
  ``text-delta`` / ``reasoning-delta`` inside a ``*-start`` … ``*-end`` pair with the same id;
  every block inside ``start-step`` … ``finish-step``; ``tool-input-delta`` after its
  ``tool-input-start``; a tool's output after its ``tool-input-available`` (or
  ``tool-input-error``). A result for a call this stream never announced is sent as a
  ``data-tool-result`` part only (the SDK would reject it as a tool output).
* Exactly one ending: ``finish`` (finished, paused, turn limit), ``abort`` (cancelled, preceded
  by a ``data-interrupted`` part carrying the kind and reason) or ``error`` + ``finish`` (failed).
  `ending` closes every open block first, so what was streamed is a complete part.
* Pure and synchronous: no I/O and no awaits, so it cannot be cancelled half-way.
"""

from __future__ import annotations

import json
from typing import Any

from ..events import (
    Event,
    ItemCommitted,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    Retrying,
    RunCancelled,
    RunFailed,
    RunFinished,
    StopReason,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    ToolOverran,
    ToolStarted,
    TurnEnded,
    TurnStarted,
)
from ..items import AssistantMessage, ToolCall, ToolResult

__all__ = ["HEADERS", "UIStreamEncoder", "sse", "sse_done"]

Chunk = dict[str, Any]

HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "connection": "keep-alive",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}

# Tool result statuses that the SDK shows as an output (partial output is still output).
_OUTPUT_STATUSES = frozenset({"ok", "interrupted"})

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop": "stop",
    "max_tokens": "length",
    "length": "length",
    "tool_use": "tool-calls",
    "refusal": "content-filter",
}


def sse(chunk: Chunk) -> bytes:
    """One chunk as one SSE event."""
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"


def sse_done() -> bytes:
    return b"data: [DONE]\n\n"


class UIStreamEncoder:
    """Turns one run's events into UI message chunks for the message ``message_id``."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.ended = False
        self._serial = 0
        self._step_open = False
        self._text_id: str | None = None
        self._reasoning_id: str | None = None
        self._calls_by_index: dict[int, tuple[str, str]] = {}  # this turn: index → (id, name)
        self._announced: set[str] = set()  # call ids with a tool-input-start
        self._inputs: set[str] = set()  # call ids with input available (or errored)
        self._stop_reason: str | None = None

    def start(self) -> list[Chunk]:
        return [{"type": "start", "messageId": self.message_id}]

    def encode(self, event: Event) -> list[Chunk]:
        """The chunks for one event (often none)."""
        out: list[Chunk] = []
        match event:
            case TurnStarted():
                self._open_step(out)
            case TextDelta(text=text) if text:
                self._open_step(out)
                self._close_reasoning(out)
                if self._text_id is None:
                    self._text_id = self._new_id("text")
                    out.append({"type": "text-start", "id": self._text_id})
                out.append({"type": "text-delta", "id": self._text_id, "delta": text})
            case ReasoningStart():
                self._open_step(out)
                self._close_text(out)
                self._open_reasoning(out)
            case ReasoningDelta(text=text) if text:
                self._open_step(out)
                self._close_text(out)
                reasoning_id = self._open_reasoning(out)
                out.append({"type": "reasoning-delta", "id": reasoning_id, "delta": text})
            case ReasoningEnd():
                self._close_reasoning(out)
            case ToolCallStart(index=index, call_id=call_id, name=name):
                self._open_step(out)
                self._close_blocks(out)
                self._calls_by_index[index] = (call_id, name)
                self._announce(out, call_id, name)
            case ToolCallDelta(index=index, arguments=arguments) if arguments:
                known = self._calls_by_index.get(index)
                if known is not None:
                    out.append(
                        {
                            "type": "tool-input-delta",
                            "toolCallId": known[0],
                            "inputTextDelta": arguments,
                        }
                    )
            case StopReason(reason=reason):
                self._stop_reason = reason
            case ItemCommitted(item=ToolCall() as call):
                self._tool_input(out, call)
            case ItemCommitted(item=ToolResult() as result):
                self._tool_output(out, result)
            case ItemCommitted(item=AssistantMessage(interrupted=True)):
                self._close_blocks(out)
            case ToolStarted(call_id=call_id, name=name):
                out.append(_data("tool-status", {"toolCallId": call_id, "status": "running"}))
            case ToolOverran(call_id=call_id):
                out.append(_data("tool-status", {"toolCallId": call_id, "status": "overran"}))
            case Retrying(attempt=attempt, delay=delay, error=error):
                out.append(_data("retrying", {"attempt": attempt, "delay": delay, "error": error}))
            case TurnEnded():
                self._close_step(out)
            case RunFinished() | RunCancelled() | RunFailed():
                out.extend(self.ending(event))
            case _:
                pass
        return out

    def ending(self, event: RunFinished | RunCancelled | RunFailed) -> list[Chunk]:
        """Close what is open and end the message as the run ended."""
        if isinstance(event, RunCancelled):
            return self.interrupted(event.kind, event.reason)
        if self.ended:
            return []
        self.ended = True
        out: list[Chunk] = []
        self._close_step(out)
        if isinstance(event, RunFailed):
            out.append({"type": "error", "errorText": event.error})
            out.append({"type": "finish", "finishReason": "error"})
            return out
        if event.status != "finished":
            out.append(_data("paused", {"status": event.status, "reason": event.reason}))
        reason = "length" if event.status == "limit_reached" else "stop"
        if event.status == "finished" and self._stop_reason is not None:
            reason = _FINISH_REASONS.get(self._stop_reason, "other")
        out.append({"type": "finish", "finishReason": reason})
        return out

    def interrupted(self, kind: str, reason: str | None) -> list[Chunk]:
        """Close what is open, mark the message interrupted (kind, reason) and ``abort``."""
        if self.ended:
            return []
        self.ended = True
        out: list[Chunk] = []
        self._close_step(out)
        out.append(_data("interrupted", {"kind": kind, "reason": reason}))
        abort: Chunk = {"type": "abort"}
        if reason:
            abort["reason"] = reason
        out.append(abort)
        return out

    # -- blocks ------------------------------------------------------------------------------

    def _new_id(self, kind: str) -> str:
        self._serial += 1
        return f"{self.message_id}-{kind}-{self._serial}"

    def _open_step(self, out: list[Chunk]) -> None:
        if not self._step_open:
            self._step_open = True
            self._calls_by_index = {}
            out.append({"type": "start-step"})

    def _close_step(self, out: list[Chunk]) -> None:
        self._close_blocks(out)
        if self._step_open:
            self._step_open = False
            out.append({"type": "finish-step"})

    def _open_reasoning(self, out: list[Chunk]) -> str:
        if self._reasoning_id is None:
            self._reasoning_id = self._new_id("reasoning")
            out.append({"type": "reasoning-start", "id": self._reasoning_id})
        return self._reasoning_id

    def _close_text(self, out: list[Chunk]) -> None:
        if self._text_id is not None:
            out.append({"type": "text-end", "id": self._text_id})
            self._text_id = None

    def _close_reasoning(self, out: list[Chunk]) -> None:
        if self._reasoning_id is not None:
            out.append({"type": "reasoning-end", "id": self._reasoning_id})
            self._reasoning_id = None

    def _close_blocks(self, out: list[Chunk]) -> None:
        self._close_text(out)
        self._close_reasoning(out)

    # -- tools -------------------------------------------------------------------------------

    def _announce(self, out: list[Chunk], call_id: str, name: str) -> None:
        if call_id not in self._announced:
            self._announced.add(call_id)
            out.append({"type": "tool-input-start", "toolCallId": call_id, "toolName": name})

    def _tool_input(self, out: list[Chunk], call: ToolCall) -> None:
        self._open_step(out)
        self._close_blocks(out)
        self._announce(out, call.call_id, call.name)
        self._inputs.add(call.call_id)
        if call.arguments is not None and call.complete:
            out.append(
                {
                    "type": "tool-input-available",
                    "toolCallId": call.call_id,
                    "toolName": call.name,
                    "input": call.arguments,
                }
            )
            return
        error = call.parse_error or "the arguments never finished streaming; the call did not run"
        out.append(
            {
                "type": "tool-input-error",
                "toolCallId": call.call_id,
                "toolName": call.name,
                "input": call.raw_arguments,
                "errorText": error,
            }
        )

    def _tool_output(self, out: list[Chunk], result: ToolResult) -> None:
        status = _data("tool-result", {"toolCallId": result.call_id, "status": result.status})
        if result.call_id not in self._inputs:  # answered a call of an earlier message
            out.append(status)
            return
        if result.status in _OUTPUT_STATUSES:
            out.append(
                {
                    "type": "tool-output-available",
                    "toolCallId": result.call_id,
                    "output": result.content,
                }
            )
        else:
            out.append(
                {
                    "type": "tool-output-error",
                    "toolCallId": result.call_id,
                    "errorText": result.content,
                }
            )
        out.append(status)


def _data(name: str, data: dict[str, Any]) -> Chunk:
    return {"type": f"data-{name}", "data": data}
