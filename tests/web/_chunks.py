"""Reading a UI message stream as the AI SDK does: a pydantic union of its chunk types, and the
order its reader (``processUIMessageStream``) requires, checked chunk by chunk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Chunk(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Start(_Chunk):
    type: Literal["start"]
    messageId: str | None = None


class StartStep(_Chunk):
    type: Literal["start-step"]


class FinishStep(_Chunk):
    type: Literal["finish-step"]


class BlockEdge(_Chunk):
    type: Literal["text-start", "text-end", "reasoning-start", "reasoning-end"]
    id: str


class BlockDelta(_Chunk):
    type: Literal["text-delta", "reasoning-delta"]
    id: str
    delta: str


class ToolInputStart(_Chunk):
    type: Literal["tool-input-start"]
    toolCallId: str
    toolName: str


class ToolInputDelta(_Chunk):
    type: Literal["tool-input-delta"]
    toolCallId: str
    inputTextDelta: str


class ToolInputAvailable(_Chunk):
    type: Literal["tool-input-available"]
    toolCallId: str
    toolName: str
    input: Any


class ToolInputError(_Chunk):
    type: Literal["tool-input-error"]
    toolCallId: str
    toolName: str
    input: Any
    errorText: str


class ToolOutputAvailable(_Chunk):
    type: Literal["tool-output-available"]
    toolCallId: str
    output: Any


class ToolOutputError(_Chunk):
    type: Literal["tool-output-error"]
    toolCallId: str
    errorText: str


class ErrorChunk(_Chunk):
    type: Literal["error"]
    errorText: str


class Finish(_Chunk):
    type: Literal["finish"]
    finishReason: (
        Literal["stop", "length", "content-filter", "tool-calls", "error", "other"] | None
    ) = None


class Abort(_Chunk):
    type: Literal["abort"]
    reason: str | None = None


class DataPart(_Chunk):
    type: str = Field(pattern=r"^data-[\w-]+$")
    data: Any
    id: str | None = None


Chunk = Annotated[
    Start
    | StartStep
    | FinishStep
    | BlockEdge
    | BlockDelta
    | ToolInputStart
    | ToolInputDelta
    | ToolInputAvailable
    | ToolInputError
    | ToolOutputAvailable
    | ToolOutputError
    | ErrorChunk
    | Finish
    | Abort,
    Field(discriminator="type"),
]
_chunk = TypeAdapter(Chunk)
_data = TypeAdapter(DataPart)


def parse_chunk(payload: str) -> _Chunk:
    raw = json.loads(payload)
    if isinstance(raw, dict) and str(raw.get("type", "")).startswith("data-"):
        return _data.validate_python(raw)
    return _chunk.validate_python(raw)


class ProtocolViolation(AssertionError):
    pass


@dataclass
class UIMessageReader:
    """Applies chunks like the SDK's reader, failing on an order it would reject."""

    chunks: list[_Chunk] = field(default_factory=list)
    done: bool = False
    text: str = ""
    reasoning: str = ""
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: list[DataPart] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _open_text: set[str] = field(default_factory=set)
    _open_reasoning: set[str] = field(default_factory=set)
    _step_open: bool = False

    @property
    def ending(self) -> str | None:
        """``finish``, ``abort``, or None (the stream ended without one)."""
        for chunk in reversed(self.chunks):
            if chunk.type in ("finish", "abort"):  # type: ignore[attr-defined]
                return str(chunk.type)  # type: ignore[attr-defined]
        return None

    def data_of(self, name: str) -> list[Any]:
        return [part.data for part in self.data if part.type == f"data-{name}"]

    def feed_line(self, payload: str) -> None:
        if self.done:
            raise ProtocolViolation(f"chunk after [DONE]: {payload!r}")
        if payload == "[DONE]":
            self.done = True
            if self.ending is None:
                raise ProtocolViolation("the stream ended with neither finish nor abort")
            return
        self.feed(parse_chunk(payload))

    def feed(self, chunk: _Chunk) -> None:
        if self.ending is not None:
            raise ProtocolViolation(f"{chunk!r} after the message ended")
        if not self.chunks and not isinstance(chunk, Start):
            raise ProtocolViolation(f"the first chunk is {chunk!r}, not start")
        self.chunks.append(chunk)
        match chunk:
            case StartStep():
                if self._step_open:
                    raise ProtocolViolation("start-step inside an open step")
                self._step_open = True
            case FinishStep():
                if self._open_text or self._open_reasoning:
                    raise ProtocolViolation("finish-step with a block still open")
                self._step_open = False
            case BlockEdge(type="text-start", id=block):
                self._in_step(chunk)
                self._open_text.add(block)
            case BlockEdge(type="reasoning-start", id=block):
                self._in_step(chunk)
                self._open_reasoning.add(block)
            case BlockEdge(type="text-end", id=block):
                self._close(self._open_text, block, chunk)
            case BlockEdge(type="reasoning-end", id=block):
                self._close(self._open_reasoning, block, chunk)
            case BlockDelta(type="text-delta", id=block, delta=delta):
                if block not in self._open_text:
                    raise ProtocolViolation(f"text-delta for a text block not open: {block}")
                self.text += delta
            case BlockDelta(type="reasoning-delta", id=block, delta=delta):
                if block not in self._open_reasoning:
                    raise ProtocolViolation(f"reasoning-delta for a block not open: {block}")
                self.reasoning += delta
            case ToolInputStart(toolCallId=call, toolName=name):
                self._in_step(chunk)
                self.tools[call] = {"name": name, "state": "input-streaming", "raw": ""}
            case ToolInputDelta(toolCallId=call, inputTextDelta=delta):
                self._tool(call, chunk)["raw"] += delta
            case ToolInputAvailable(toolCallId=call, toolName=name, input=value):
                self.tools.setdefault(call, {"name": name, "raw": ""})
                self.tools[call].update(state="input-available", input=value)
            case ToolInputError(toolCallId=call, toolName=name, errorText=error):
                self.tools.setdefault(call, {"name": name, "raw": ""})
                self.tools[call].update(state="output-error", error=error)
            case ToolOutputAvailable(toolCallId=call, output=output):
                tool = self._tool(call, chunk)
                if tool["state"] not in ("input-available", "output-error"):
                    raise ProtocolViolation(f"output before input for {call}")
                tool.update(state="output-available", output=output)
            case ToolOutputError(toolCallId=call, errorText=error):
                self._tool(call, chunk).update(state="output-error", error=error)
            case ErrorChunk(errorText=error):
                self.errors.append(error)
            case Finish() | Abort():
                if self._open_text or self._open_reasoning or self._step_open:
                    raise ProtocolViolation(f"{chunk.type} with a step or block still open")
            case DataPart():
                self.data.append(chunk)
            case _:
                pass

    def _in_step(self, chunk: _Chunk) -> None:
        if not self._step_open:
            raise ProtocolViolation(f"{chunk!r} outside a step")

    def _close(self, open_ids: set[str], block: str, chunk: _Chunk) -> None:
        if block not in open_ids:
            raise ProtocolViolation(f"{chunk!r} closes a block that is not open")
        open_ids.discard(block)

    def _tool(self, call: str, chunk: _Chunk) -> dict[str, Any]:
        if call not in self.tools:
            raise ProtocolViolation(f"{chunk!r} for a tool call never announced")
        return self.tools[call]
