"""The offline model's answer: planned in full from the request, before the first event.

What it answers, and when, is listed in the docstring of `llm_worker.models.offline`.

Invariants: the plan is a pure function of the request and the options (no clock, no randomness,
no per-process hash: texts are chosen by CRC32); joined, the text chunks are the text.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from ..events import (
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
from ..items import AssistantMessage, Item, Note, ToolCall, ToolResult, Usage, UserMessage
from ..tools import ToolSpec
from ._base import ModelRequest
from ._in_process import count_words, request_words
from ._offline_arguments import named_tools, prompt_values, tool_arguments

PlannedEvent = tuple[Callable[[], StreamEvent], bool]
"""One event of the plan, built when it is sent, and whether it carries content (is paced)."""

_I = TypeVar("_I", bound=UserMessage | AssistantMessage)


@dataclass
class _Answer:
    """The events of one answer, built lazily (each flagged ``paced`` if it carries content)."""

    events: list[PlannedEvent] = field(default_factory=list)
    output_words: int = 0
    reasoning_words: int = 0

    def reasoning(self, text: str) -> None:
        self.events.append((ReasoningStart, False))
        self.events.extend((partial(ReasoningDelta, text=p), True) for p in _chunks(text, 4))
        self.events.append((ReasoningEnd, False))
        self.reasoning_words += count_words(text)
        self.output_words += count_words(text)

    def text(self, text: str, chunk: int) -> None:
        self.events.extend((partial(TextDelta, text=p), True) for p in _chunks(text, chunk))
        self.output_words += count_words(text)

    def tool_call(self, index: int, call_id: str, name: str, arguments: str) -> None:
        start = partial(ToolCallStart, index=index, call_id=call_id, name=name)
        self.events.append((start, False))
        self.events.extend(
            (partial(ToolCallDelta, index=index, arguments=piece), True)
            for piece in _fragments(arguments)
        )
        self.events.append((partial(ToolCallEnd, index=index), False))
        self.output_words += count_words(arguments)

    def finish(self, stop: str, input_words: int) -> list[PlannedEvent]:
        usage = Usage(
            input_tokens=input_words,
            output_tokens=self.output_words,
            reasoning_tokens=self.reasoning_words,
        )
        self.events.append((partial(StopReason, reason=stop), False))
        self.events.append((partial(UsageUpdate, usage=usage), False))
        return self.events


def plan_answer(request: ModelRequest, *, reasoning: bool, chunk: int) -> list[PlannedEvent]:
    history = list(request.history)
    prompt_at, user = _last(history, UserMessage)
    prompt = user.text if user is not None else ""
    results = [item for item in history[prompt_at + 1 :] if isinstance(item, ToolResult)]
    answer_at, _ = _last(history, AssistantMessage)
    interrupted = any(
        isinstance(item, Note) and item.kind == "interrupted" for item in history[answer_at + 1 :]
    )
    prefix = "(My previous answer was interrupted.) " if interrupted else ""
    answer = _Answer()

    if results:
        if reasoning:
            answer.reasoning(_summary_thoughts(results))
        answer.text(_structured(request, prompt) or prefix + _summary(results), chunk)
        return answer.finish("end_turn", request_words(request))

    named = named_tools(prompt, request.tools)
    if named:
        names = [spec.name for spec, _ in named]
        if reasoning:
            answer.reasoning(_call_thoughts(names))
        answer.text(prefix + _call_intro(names), chunk)
        first_id = 1 + sum(isinstance(item, ToolCall) for item in history)
        for index, (spec, pool) in enumerate(named):
            arguments = json.dumps(tool_arguments(spec.parameters, pool), ensure_ascii=False)
            answer.tool_call(index, f"call_{first_id + index}_{spec.name}", spec.name, arguments)
        return answer.finish("tool_use", request_words(request))

    if reasoning:
        answer.reasoning(_answer_thoughts(prompt))
    text = _structured(request, prompt) or prefix + _reply(prompt, request.tools, chunk)
    answer.text(text, chunk)
    return answer.finish("end_turn", request_words(request))


def _structured(request: ModelRequest, prompt: str) -> str | None:
    """A structured answer (JSON made up from the schema and the prompt), if one is asked for."""
    if request.output is None or request.output.mode != "native":
        return None
    return json.dumps(tool_arguments(request.output.schema, prompt_values(prompt)))


def _last(items: Sequence[Item], kind: type[_I]) -> tuple[int, _I | None]:
    """The index (-1 if none) and value of the last item of type ``kind``."""
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if isinstance(item, kind):
            return index, item
    return -1, None


def _chunks(text: str, words: int) -> list[str]:
    """``text`` in pieces of ``words`` words, each keeping its trailing space; joined, the text."""
    pieces = [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)]


def _fragments(arguments: str) -> list[str]:
    """JSON arguments in 2–4 non-empty fragments, cut at even offsets, as providers send them."""
    count = max(2, min(4, len(arguments) // 12))
    count = min(count, len(arguments)) or 1
    cuts = [len(arguments) * i // count for i in range(count + 1)]
    return [arguments[cuts[i] : cuts[i + 1]] for i in range(count)]


def _short(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _names(names: Sequence[str], last: str = "and") -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"


# -- texts ----------------------------------------------------------------------------------------

_MIDDLES = (
    "I am the offline model built into llm-worker: I need no network and no API key, so my "
    "answers come from a template, but they stream like a real model's.",
    "This reply comes from llm-worker's built-in offline model, which needs no key and no "
    "network; it cannot look anything up, yet it behaves like a streaming provider.",
    "No real language model wrote this: llm-worker's offline model builds it from a template, "
    "so the same request always gets the same words.",
)


def _reply(prompt: str, tools: Sequence[ToolSpec], chunk: int) -> str:
    if prompt.strip():
        opening = f'You asked: "{_short(prompt, 100)}".'
    else:
        opening = "Hello! There is no question in the conversation yet."
    middle = _MIDDLES[zlib.crc32(prompt.encode()) % len(_MIDDLES)]
    pace = "a word" if chunk == 1 else f"{chunk} words"
    stop = (
        f"The text arrives {pace} at a time, so you can stop it at any moment and keep what "
        "was already said."
    )
    if tools:
        names = _names([spec.name for spec in tools], last="or")
        hint = f"Name one of my tools to see a tool call: {names}."
    else:
        hint = "For real answers, configure a provider such as openai or anthropic."
    return f"{opening} {middle} {stop} {hint}"


def _call_intro(names: Sequence[str]) -> str:
    together = " in parallel" if len(names) > 1 else ""
    return f"I'll call {_names(names)}{together}."


_VERBS = {
    "ok": "returned",
    "error": "failed",
    "cancelled": "was cancelled",
    "interrupted": "was interrupted",
    "abandoned": "was abandoned",
    "skipped": "was skipped",
}


def _summary(results: Sequence[ToolResult]) -> str:
    parts = [
        f"{r.name} {_VERBS.get(r.status, r.status)}: {_short(r.content, 120) or '(no output)'}"
        for r in results
    ]
    text = "Here is what the tools reported: " + "; ".join(parts) + "."
    failed = [r for r in results if r.status != "ok"]
    if failed:
        listed = ", ".join(f"{r.name}: {r.status}" for r in failed)
        noun = "call" if len(results) == 1 else "calls"
        text += (
            f" {len(failed)} of {len(results)} {noun} did not finish normally ({listed}), "
            "so that part of the answer may be incomplete."
        )
    else:
        text += " Every call finished normally."
    return text


def _answer_thoughts(prompt: str) -> str:
    about = f'"{_short(prompt, 60)}"' if prompt.strip() else "nothing yet"
    return (
        f"The user asked {about}. I have no network, so I will answer from my template and "
        "keep it short."
    )


def _call_thoughts(names: Sequence[str]) -> str:
    noun = "it" if len(names) == 1 else "them"
    return f"The user named {_names(names)}. I should call {noun} with values from the prompt."


def _summary_thoughts(results: Sequence[ToolResult]) -> str:
    noun = "result" if len(results) == 1 else "results"
    return f"{len(results)} tool {noun} came back. I should summarise and flag any failure."
