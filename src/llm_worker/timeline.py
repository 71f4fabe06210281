"""The timeline: turns one response's stream events into blocks, and blocks into history items.

A block is one text run, one reasoning run, or one tool call. When a stream is cut off,
`Timeline.abort_current_block` closes whatever is open (the text or reasoning block and every
tool call still streaming) as *aborted* and keeps its partial content, so `Timeline.items` still
returns everything that was said: an interrupted assistant message, and tool calls marked
incomplete (never to be executed). Consumers that want deltas as they come read the events
(`Worker.stream`); the timeline only assembles.

Feeding is synchronous and cheap (it runs once per stream chunk); nothing here awaits, so a
cancellation can never leave a block half-updated.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Set
from dataclasses import dataclass, field
from typing import Literal

from ._error_base import LLMWorkerError
from ._text import check_json_value, valid_text
from .events import (
    AnsweredBy,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    StopReason,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UsageUpdate,
)
from .items import AssistantMessage, AssistantPart, Item, ReasoningPart, TextPart, ToolCall, Usage


class MalformedStream(LLMWorkerError, ValueError):
    """The events do not form a valid response (a delta or end without its start)."""


BlockKind = Literal["text", "reasoning", "tool_call"]
BlockStatus = Literal["open", "done", "aborted"]


@dataclass(eq=False)
class Block:
    """One block of a response; ``chunks`` holds its text or its tool-call argument fragments."""

    kind: BlockKind
    status: BlockStatus = "open"
    chunks: list[str] = field(default_factory=list)
    call_id: str | None = None
    name: str | None = None
    index: int | None = None
    provider: str | None = None
    provider_id: str | None = None
    signature: str | None = None
    redacted_data: str | None = None
    encrypted_content: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.chunks)


class Timeline:
    """Assembles one model response. Create one per turn."""

    def __init__(
        self,
        *,
        model: str | None = None,
        taken_call_ids: Set[str] = frozenset(),
    ) -> None:
        """``taken_call_ids``: ids already in the history; a call reusing one gets a fresh id."""
        self.blocks: list[Block] = []
        self._taken_call_ids = taken_call_ids
        self.usage = Usage()
        self.stop_reason: str | None = None
        self.model = model
        self._text: Block | None = None  # the open text or reasoning block, if any
        self._calls: dict[int, Block] = {}  # open tool-call blocks by stream index

    # -- feeding --------------------------------------------------------------------------------

    def feed(self, event: StreamEvent) -> None:
        """Apply one stream event; events that carry no content (retries, errors) are ignored."""
        if isinstance(event, TextDelta):
            block = self._open_text("text")
            block.chunks.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self._calls.get(event.index)
            if call is None:
                raise MalformedStream(
                    f"tool-call arguments for index {event.index} before its start"
                )
            call.chunks.append(event.arguments)
        elif isinstance(event, ReasoningDelta):
            block = self._open_text("reasoning")
            block.chunks.append(event.text)
        elif isinstance(event, ReasoningStart):
            self._close_text()
            block = self._open_text("reasoning")
            block.provider = event.provider
            block.provider_id = event.provider_id
            block.redacted_data = event.redacted_data
            block.encrypted_content = event.encrypted_content
        elif isinstance(event, ReasoningEnd):
            if self._text is None or self._text.kind != "reasoning":
                raise MalformedStream("reasoning end without an open reasoning block")
            block = self._text
            block.signature = event.signature or block.signature
            block.encrypted_content = event.encrypted_content or block.encrypted_content
            self._close_text()
        elif isinstance(event, ToolCallStart):
            if event.index in self._calls:
                raise MalformedStream(f"a second tool call started at open index {event.index}")
            self._close_text()
            call = Block(
                "tool_call",
                call_id=self._distinct_call_id(event.call_id),
                name=event.name,
                index=event.index,
                provider_id=event.provider_id,
            )
            self._calls[event.index] = call
            self._start(call)
        elif isinstance(event, ToolCallEnd):
            call = self._calls.pop(event.index, None)
            if call is None:
                raise MalformedStream(f"tool call end for index {event.index} without its start")
            self._end(call, "done")
        elif isinstance(event, UsageUpdate):
            self.usage = self.usage + event.usage
        elif isinstance(event, StopReason):
            self.stop_reason = event.reason
        elif isinstance(event, AnsweredBy):
            self.model = event.model

    def finish(self) -> None:
        """The stream ended normally: close the text block; unfinished calls stay incomplete."""
        self._close_text()
        for call in list(self._calls.values()):
            self._end(call, "aborted")
        self._calls.clear()

    def abort_current_block(self) -> None:
        """Close what is open as *aborted*, keeping its partial content: the text or reasoning
        block, and every tool call whose arguments were still streaming."""
        if self._text is not None:
            block, self._text = self._text, None
            self._end(block, "aborted")
        for call in list(self._calls.values()):
            self._end(call, "aborted")
        self._calls.clear()

    # -- results --------------------------------------------------------------------------------

    @property
    def interrupted(self) -> bool:
        return any(block.status == "aborted" for block in self.blocks)

    def items(self, *, interrupted: bool = False) -> list[Item]:
        """The history items for this response: one assistant message, then its tool calls.

        The message is there even when it holds no text (it carries the stop reason and usage),
        so every response is one message followed by the calls it made.
        """
        parts: list[AssistantPart] = []
        calls: list[Item] = []
        for block in self.blocks:
            if block.kind == "text":
                if block.chunks:
                    parts.append(TextPart(text=block.text))
            elif block.kind == "reasoning":
                parts.append(
                    ReasoningPart(
                        text=block.text,
                        signature=block.signature,
                        redacted_data=block.redacted_data,
                        encrypted_content=block.encrypted_content,
                        provider_id=block.provider_id,
                        provider=block.provider,
                    )
                )
            else:
                calls.append(_tool_call(block))
        message = AssistantMessage(
            parts=tuple(parts),
            interrupted=interrupted or self.interrupted,
            stop_reason=self.stop_reason,
            model=self.model,
            usage=self.usage,
        )
        return [message, *calls]

    # -- internals ------------------------------------------------------------------------------

    def _distinct_call_id(self, call_id: str) -> str:
        """``call_id``, or a fresh variant if the history or this response already has it; a
        call the server gave no id gets a new one.

        Some compatible servers reuse one id for every call, or send none; providers pair calls
        and results by id, so ids must be unique within a history as it is sent.
        """
        if not call_id:
            return f"call_{uuid.uuid4().hex[:24]}"
        mine = {block.call_id for block in self.blocks if block.kind == "tool_call"}
        candidate, n = call_id, 1
        while candidate in mine or candidate in self._taken_call_ids:
            n += 1
            candidate = f"{call_id}_{n}"
        return candidate

    def _open_text(self, kind: Literal["text", "reasoning"]) -> Block:
        block = self._text
        if block is not None and block.kind == kind:
            return block
        self._close_text()
        block = self._text = Block(kind)
        self._start(block)
        return block

    def _close_text(self) -> None:
        if self._text is not None:
            block, self._text = self._text, None
            self._end(block, "done")

    def _start(self, block: Block) -> None:
        self.blocks.append(block)

    def _end(self, block: Block, status: BlockStatus) -> None:
        block.status = status


def _tool_call(block: Block) -> ToolCall:
    raw = valid_text(block.text)
    complete = block.status == "done"
    arguments: dict[str, object] | None = None
    error: str | None = None
    if not complete:
        error = "the call's arguments were cut off before they finished streaming"
    else:
        arguments, error = _parse_arguments(raw)
    assert block.call_id is not None
    assert block.name is not None
    return ToolCall(
        call_id=block.call_id,
        name=block.name,
        raw_arguments=raw,
        arguments=arguments,
        parse_error=error,
        complete=complete,
        provider_id=block.provider_id,
    )


def _parse_arguments(raw: str) -> tuple[dict[str, object] | None, str | None]:
    """The arguments as a JSON object, or why they are not one (shown to the model).

    Any text is safe here: numbers too long to convert, nesting too deep for the parser or for
    serialising again, and escaped lone surrogates are all reported or repaired, never raised.
    """
    try:
        parsed = json.loads(raw) if raw.strip() else {}
    except RecursionError:
        return None, "arguments are not valid JSON: nested too deeply"
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        return None, f"arguments are not valid JSON: {exc}"
    if not isinstance(parsed, dict):
        return None, f"arguments must be a JSON object, got {type(parsed).__name__}"
    refused = check_json_value(parsed)
    if refused is not None:
        return None, refused
    return parsed, None
