"""A session's history → AI SDK UI messages (what ``useChat`` accepts as ``messages``).

Invariants:
* One UI message per user input, and one assistant UI message per run that followed it (text,
  reasoning, tool calls with their results, over every turn), so a reloaded chat looks like the
  streams that built it. Notes the worker wrote for the model are not shown; an interruption
  note starts a new assistant message (the run that continued after a stop).
* Part shapes are the SDK's: ``text`` / ``reasoning`` with ``state: "done"``, ``step-start`` at
  each model response, ``tool-<name>`` with ``input-available`` / ``output-available`` /
  ``output-error``, and ``data-*`` parts for what the SDK has no part for: an interruption
  (``data-interrupted``) and a tool result's status (``data-tool-result``).
* Pure: reads items, builds dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..items import (
    AssistantMessage,
    Item,
    Note,
    ReasoningPart,
    ToolCall,
    UserMessage,
)

__all__ = ["ui_messages"]

UIMessage = dict[str, Any]
_OUTPUT_STATUSES = frozenset({"ok", "interrupted"})
_INTERRUPTED_STATUSES = frozenset({"interrupted", "cancelled", "abandoned"})


def ui_messages(items: Sequence[Item], last_stop: dict[str, Any] | None = None) -> list[UIMessage]:
    """The history as UI messages; ``last_stop`` (kind, reason) labels the last interruption."""
    messages: list[UIMessage] = []
    assistant: UIMessage | None = None
    tool_parts: dict[str, dict[str, Any]] = {}
    for item in items:
        if isinstance(item, UserMessage):
            assistant = None
            messages.append(
                {"id": item.id, "role": "user", "parts": [{"type": "text", "text": item.text}]}
            )
            continue
        if isinstance(item, Note):  # for the model; one starts the run after a stop
            if item.kind == "interrupted":
                assistant = None
            continue
        if assistant is None:
            assistant = {"id": item.id, "role": "assistant", "parts": []}
            messages.append(assistant)
        parts: list[dict[str, Any]] = assistant["parts"]
        if isinstance(item, AssistantMessage):
            parts.append({"type": "step-start"})
            for part in item.parts:
                kind = "reasoning" if isinstance(part, ReasoningPart) else "text"
                if part.text:
                    parts.append({"type": kind, "text": part.text, "state": "done"})
            if item.interrupted:
                _mark_interrupted(assistant)
        elif isinstance(item, ToolCall):
            tool_part: dict[str, Any] = {
                "type": f"tool-{item.name}",
                "toolCallId": item.call_id,
                "state": "input-available",
                "input": item.arguments if item.arguments is not None else item.raw_arguments,
            }
            tool_parts[item.call_id] = tool_part
            parts.append(tool_part)
        else:
            call_part = tool_parts.get(item.call_id)
            if call_part is not None:
                if item.status in _OUTPUT_STATUSES:
                    call_part.update(state="output-available", output=item.content)
                else:
                    call_part.update(state="output-error", errorText=item.content)
            parts.append(
                {
                    "type": "data-tool-result",
                    "data": {"toolCallId": item.call_id, "status": item.status},
                }
            )
            if item.status in _INTERRUPTED_STATUSES:
                _mark_interrupted(assistant)
    if last_stop is not None and messages:  # the last run was stopped: say how
        for part in messages[-1]["parts"]:
            if part["type"] == "data-interrupted":
                part["data"].update(last_stop)
    return messages


def _mark_interrupted(message: UIMessage) -> None:
    parts: list[dict[str, Any]] = message["parts"]
    if not any(part["type"] == "data-interrupted" for part in parts):
        parts.append({"type": "data-interrupted", "data": {"kind": None, "reason": None}})
    else:  # keep the mark last, after what was kept
        mark = next(part for part in parts if part["type"] == "data-interrupted")
        parts.remove(mark)
        parts.append(mark)
