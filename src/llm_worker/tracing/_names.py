"""Attribute names, and the values a run's items give them: the vocabulary of a trace.

Invariants:
* Model-request spans use the OpenTelemetry GenAI semantic-convention names (``gen_ai.*``);
  everything about how a run stopped and what it kept is under ``llm_worker.*``.
* Nothing here reads a key or a credential: values come from the run's items, its `Cause` (whose
  failure texts the providers already redacted) and the model's name.
* Message content is read only by `content_attributes`, which the observer calls only when
  content capture is on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..cancel import Cause
from ..items import AssistantMessage, Item, ToolCall, ToolResult, Usage, UserMessage

# GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/).
OPERATION = "gen_ai.operation.name"
SYSTEM = "gen_ai.system"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
AGENT_NAME = "gen_ai.agent.name"
CONVERSATION_ID = "gen_ai.conversation.id"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"

# How a run ended and what it kept.
RUN_ID = "llm_worker.run.id"
RUN_OUTCOME = "llm_worker.run.outcome"  # finished paused limit_reached cancelled aborted failed
RUN_TURNS = "llm_worker.run.turns"
CAUSE_KIND = "llm_worker.cause.kind"
CAUSE_REASON = "llm_worker.cause.reason"
CAUSE_ORIGIN = "llm_worker.cause.origin"
CAUSE_TEXT = "llm_worker.cause.text"
CAUSE_TREE = "llm_worker.cause.tree"
NOTICED_AT = "llm_worker.stop.noticed_at"  # the await the run was in when it stopped
CANCEL_LATENCY_MS = "llm_worker.stop.cancel_to_return_ms"
CLEANUP_MS = "llm_worker.cleanup.duration_ms"
CLEANUP_ERRORS = "llm_worker.cleanup.errors"
KEPT_ITEMS = "llm_worker.kept.items"
KEPT_INTERRUPTED_CHARS = "llm_worker.kept.interrupted_text_chars"
KEPT_TOOL_RESULTS = "llm_worker.kept.tool_results"
KEPT_PARTIAL_OUTPUTS = "llm_worker.kept.partial_outputs"
KEPT_SYNTHETIC_RESULTS = "llm_worker.kept.synthetic_results"
KEPT_INCOMPLETE_CALLS = "llm_worker.kept.incomplete_calls"
TURN = "llm_worker.turn"
TURN_INTERRUPTED = "llm_worker.turn.interrupted"
HOOK_POINT = "llm_worker.hook.point"
TOOL_STATUS = "llm_worker.tool.status"
TOOL_THREAD = "llm_worker.tool.thread"
TOOL_OVERRAN = "llm_worker.tool.overran"
TOOL_PARTIAL_CHARS = "llm_worker.tool.partial_output_chars"
CANCEL_EVENT = "llm_worker.cancel"  # the span event at the moment cancel() was called
CANCEL_THREAD = "llm_worker.cancel.thread"

AttributeValue = str | bool | int | float | Sequence[str]


def system_and_model(model_name: str) -> tuple[str, str]:
    """``"openai:gpt-4o"`` → ``("openai", "gpt-4o")``; a name without a provider is both."""
    system, _, model = model_name.partition(":")
    return system, model or model_name


def cause_attributes(cause: Cause) -> dict[str, AttributeValue]:
    """The `Cause` as attributes: its kind, reason and origin, one line and, for a
    composition, the tree."""
    primary = next(cause.leaves(), cause)
    attributes: dict[str, AttributeValue] = {CAUSE_KIND: cause.kind, CAUSE_TEXT: str(cause)}
    if primary.reason:
        attributes[CAUSE_REASON] = primary.reason
    if primary.origin:
        attributes[CAUSE_ORIGIN] = primary.origin
    if cause.tag in ("sequential", "parallel"):
        attributes[CAUSE_TREE] = cause.render_tree()
    return attributes


def kept_attributes(items: Sequence[Item]) -> dict[str, AttributeValue]:
    """What a run kept: its items, the characters of interrupted text, real tool results,
    partial outputs, calls answered synthetically and calls cut off mid-arguments."""
    interrupted_chars = results = partial = synthetic = incomplete = 0
    for item in items:
        if isinstance(item, AssistantMessage) and item.interrupted:
            interrupted_chars += len(item.text)
        elif isinstance(item, ToolResult):
            if item.status in ("ok", "error", "skipped"):
                results += 1
            elif item.status == "interrupted":
                partial += 1
            else:  # cancelled, abandoned: the worker answered for the tool
                synthetic += 1
        elif isinstance(item, ToolCall) and not item.complete:
            incomplete += 1
    return {
        KEPT_ITEMS: len(items),
        KEPT_INTERRUPTED_CHARS: interrupted_chars,
        KEPT_TOOL_RESULTS: results,
        KEPT_PARTIAL_OUTPUTS: partial,
        KEPT_SYNTHETIC_RESULTS: synthetic,
        KEPT_INCOMPLETE_CALLS: incomplete,
    }


def usage_attributes(usage: Usage) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {}
    if usage.input_tokens is not None:
        attributes[INPUT_TOKENS] = usage.input_tokens
    if usage.output_tokens is not None:
        attributes[OUTPUT_TOKENS] = usage.output_tokens
    return attributes


def content_attributes(
    key: str, items: Sequence[Item], system: str | None = None
) -> dict[str, AttributeValue]:
    """Messages as the GenAI JSON shape (role and text parts) under ``key``: content capture."""
    messages: list[dict[str, object]] = []
    if system:
        messages.append({"role": "system", "parts": [{"type": "text", "content": system}]})
    for item in items:
        if isinstance(item, UserMessage):
            messages.append({"role": "user", "parts": [{"type": "text", "content": item.text}]})
        elif isinstance(item, AssistantMessage):
            parts: list[dict[str, object]] = [{"type": "text", "content": item.text}]
            messages.append({"role": "assistant", "parts": parts})
        elif isinstance(item, ToolCall):
            call = {"type": "tool_call", "id": item.call_id, "name": item.name}
            messages.append({"role": "assistant", "parts": [call]})
        elif isinstance(item, ToolResult):
            result = {"type": "tool_call_response", "id": item.call_id, "response": item.content}
            messages.append({"role": "tool", "parts": [result]})
    return {key: json.dumps(messages, ensure_ascii=False)} if messages else {}
