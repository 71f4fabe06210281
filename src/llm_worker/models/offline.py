"""The built-in offline model: streamed, deterministic answers with no key and no network.

It lets ``make demo``, the command line and tests drive the whole worker — streaming, parallel
tool calls, interruption and resumption — without a provider.

Invariants:
* The answer is a pure function of the request (no clock, no randomness, no per-process hash),
  planned in full before the first event: same request, same events.
* Every event is preceded by an await — ``anyio.sleep(pace)`` before content, a checkpoint
  before the rest — so a person or a test can stop it anywhere; cancelled there, it just stops.
* The stream holds nothing but its generator, which leaving the ``async with`` closes.

What it answers, from the request alone:

* tool results after the latest user message → a summary of them, naming those not ``ok``;
* a latest user message that names tools of the request → a short sentence, then one call per
  named tool (parallel calls), with arguments made up from each tool's JSON schema and the prompt;
* anything else → a few sentences that echo the prompt.

An ``interrupted`` note after the last assistant message makes the answer say so first.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

from ..cancel import shielded
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
from ..items import (
    AssistantMessage,
    Item,
    Note,
    ToolCall,
    ToolResult,
    Usage,
    UserMessage,
)
from ..tools import ToolSpec
from ._base import ModelRequest

__all__ = ["OfflineModel"]

# Closing a generator does no I/O; the bound only guards against a misbehaving subclass.

_I = TypeVar("_I", bound=UserMessage | AssistantMessage)


class OfflineModel:
    """A `Model` that answers from templates, paced like a real provider.

    ``pace`` is the pause in seconds before each text, reasoning or argument chunk (0 still
    yields to the event loop), ``words_per_chunk`` the size of a text chunk, and ``reasoning``
    adds a short reasoning block before the answer.

    Cancellation: every event is preceded by an await at which a cancellation simply stops the
    stream; leaving the ``async with`` closes it (shielded, bounded). Nothing else to release.
    """

    def __init__(
        self, *, pace: float = 0.03, reasoning: bool = False, words_per_chunk: int = 1
    ) -> None:
        if pace < 0:
            raise ValueError(f"pace must be >= 0, got {pace!r}")
        if words_per_chunk < 1:
            raise ValueError(f"words_per_chunk must be >= 1, got {words_per_chunk!r}")
        self.pace = pace
        self.reasoning = reasoning
        self.words_per_chunk = words_per_chunk

    def __repr__(self) -> str:
        return (
            f"OfflineModel(pace={self.pace!r}, reasoning={self.reasoning!r}, "
            f"words_per_chunk={self.words_per_chunk!r})"
        )

    @property
    def name(self) -> str:
        return "offline"

    def stream(
        self, request: ModelRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Open a stream of the answer to ``request``; nothing happens until it is iterated.

        Cancellation: lands at the await before any event; the events already yielded stay
        delivered and the ``async with`` exits cleanly.
        """
        return closing_stream(self._events(request), what="closing the offline stream")

    async def _events(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        for make, paced in _plan(request, reasoning=self.reasoning, chunk=self.words_per_chunk):
            if paced:
                await anyio.sleep(self.pace)
            else:
                await anyio.lowlevel.checkpoint()
            yield make()


@asynccontextmanager
async def closing_stream(
    events: AsyncGenerator[StreamEvent, None], *, what: str
) -> AsyncGenerator[AsyncIterator[StreamEvent], None]:
    """Hand out ``events`` and ``aclose()`` it on exit, in this task, shielded and bounded.

    Shared by the in-process models (offline, scripted): closing here, not in a garbage
    collector hook, runs the generator's clean-up before the ``async with`` is left, whatever
    ended it. Iterate in the task that entered the block.
    """
    try:
        yield events
    finally:
        # A generator a cancellation went through has finished already: nothing to close.
        if getattr(events, "ag_frame", events) is not None:
            with shielded(None, what):  # the generators here never await while closing
                await events.aclose()


def count_words(text: str) -> int:
    """Words in ``text``: the offline models' stand-in for tokens."""
    return len(text.split())


def request_words(request: ModelRequest) -> int:
    """Words in everything a request sends: system prompt, history, tool names and descriptions."""
    total = count_words(request.system or "")
    for item in request.history:
        total += count_words(_item_text(item))
    for spec in request.tools:
        total += 1 + count_words(spec.description)
    return total


def _item_text(item: Item) -> str:
    if isinstance(item, AssistantMessage):
        return " ".join(part.text for part in item.parts)
    if isinstance(item, ToolCall):
        return f"{item.name} {item.raw_arguments}"
    if isinstance(item, ToolResult):
        return item.content
    return item.text


# -- planning: the whole answer, computed before the first event ---------------------------------


@dataclass
class _Answer:
    """The events of one answer, built lazily (each flagged ``paced`` if it carries content)."""

    events: list[tuple[Callable[[], StreamEvent], bool]] = field(default_factory=list)
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

    def finish(self, stop: str, input_words: int) -> list[tuple[Callable[[], StreamEvent], bool]]:
        usage = Usage(
            input_tokens=input_words,
            output_tokens=self.output_words,
            reasoning_tokens=self.reasoning_words,
        )
        self.events.append((partial(StopReason, reason=stop), False))
        self.events.append((partial(UsageUpdate, usage=usage), False))
        return self.events


def _plan(
    request: ModelRequest, *, reasoning: bool, chunk: int
) -> list[tuple[Callable[[], StreamEvent], bool]]:
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
        answer.text(prefix + _summary(results), chunk)
        return answer.finish("end_turn", request_words(request))

    named = _named_tools(prompt, request.tools)
    if named:
        names = [spec.name for spec, _ in named]
        if reasoning:
            answer.reasoning(_call_thoughts(names))
        answer.text(prefix + _call_intro(names), chunk)
        first_id = 1 + sum(isinstance(item, ToolCall) for item in history)
        for index, (spec, pool) in enumerate(named):
            arguments = json.dumps(_arguments(spec.parameters, pool), ensure_ascii=False)
            answer.tool_call(index, f"call_{first_id + index}_{spec.name}", spec.name, arguments)
        return answer.finish("tool_use", request_words(request))

    if reasoning:
        answer.reasoning(_answer_thoughts(prompt))
    answer.text(prefix + _reply(prompt, request.tools, chunk), chunk)
    return answer.finish("end_turn", request_words(request))


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


# -- tool calls: which tools the prompt names, and arguments from their schemas -------------------

_QUOTE_RE = re.compile(r"\"([^\"]+)\"|“([^”]+)”|(?<!\w)'([^']+)'(?!\w)")
_NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")
_TOKEN_RE = re.compile(r"[\w'’-]+|[^\w\s]")
# Words that never make a value: "weather in Paris please" gives "Paris".
_STOPWORD_TEXT = """a about after again all also am an and any are as at be before but by call
    calling can could do does for from get give go has have how i i'd i'll i'm in into is it
    it's its let let's me my now of on or our please run say see show so some than that the them
    then these this those to tool tools try up us use using want was we what what's when where
    which who why will with would you your"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass
class _Pool:
    """Values the prompt offers one tool call, used up in order; ``text`` is searched for enums."""

    numbers: list[str]
    quotes: list[str]
    words: str
    text: str

    def number(self) -> str | None:
        return self.numbers.pop(0) if self.numbers else None

    def quote(self) -> str | None:
        return self.quotes.pop(0) if self.quotes else None


def _mention_re(name: str) -> re.Pattern[str] | None:
    parts = [re.escape(part) for part in name.split("_") if part]
    if not parts:
        return None
    return re.compile(r"(?<!\w)" + r"[_\s]+".join(parts) + r"(?!\w)", re.IGNORECASE)


def _named_tools(prompt: str, tools: Sequence[ToolSpec]) -> list[tuple[ToolSpec, _Pool]]:
    """The tools ``prompt`` names, in the order it first names them, each with its values.

    A tool takes values from its *segment* — the text between its first mention and the next
    mention of any tool — then from the text before the first mention, never from another tool's
    segment: "get_weather for Paris and slow_count to 5".
    """
    firsts: list[tuple[int, int, ToolSpec]] = []
    spans: list[tuple[int, int]] = []
    for spec in tools:
        pattern = _mention_re(spec.name)
        found = list(pattern.finditer(prompt)) if pattern else []
        if found:
            firsts.append((found[0].start(), found[0].end(), spec))
            spans.extend(match.span() for match in found)
    if not firsts:
        return []
    firsts.sort(key=lambda first: first[0])
    quoted = list(_QUOTE_RE.finditer(prompt))
    quotes = [(m.start(), next(g for g in m.groups() if g)) for m in quoted]
    # Blank out tool names and quoted phrases (keeping offsets) so they yield no numbers or words.
    blanked = list(prompt)
    for start, end in [*spans, *(m.span() for m in quoted)]:
        blanked[start:end] = "," + " " * (end - start - 1)
    text = "".join(blanked)
    numbers = [(m.start(), m.group()) for m in _NUMBER_RE.finditer(text)]
    starts = sorted(start for start, _ in spans)
    preamble = firsts[0][0]
    named = []
    for _, end, spec in firsts:
        stop = next((start for start in starts if start >= end), len(prompt))
        choices = _enum_words(spec.parameters)
        pool = _Pool(
            numbers=_in_ranges(numbers, (end, stop), (0, preamble)),
            quotes=_in_ranges(quotes, (end, stop), (0, preamble)),
            words=_last_words(text[end:stop], choices)
            or _last_words(text[:preamble], choices)
            or _last_words(text, choices)
            or "example",
            text=text[end:stop] + " " + text[:preamble],
        )
        named.append((spec, pool))
    return named


def _in_ranges(found: Sequence[tuple[int, str]], *ranges: tuple[int, int]) -> list[str]:
    """The values found in each range in turn, in prompt order within a range."""
    return [value for start, stop in ranges for pos, value in found if start <= pos < stop]


def _enum_words(schema: Any) -> frozenset[str]:
    """Every string enum value anywhere in ``schema``: choices, not free words."""
    if isinstance(schema, Mapping):
        own = schema.get("enum")
        words = {v.lower() for v in own if isinstance(v, str)} if isinstance(own, list) else set()
        return frozenset(words).union(*(_enum_words(v) for v in schema.values()))
    if isinstance(schema, list):
        return frozenset().union(*(_enum_words(v) for v in schema))
    return frozenset()


def _last_words(text: str, exclude: frozenset[str] = frozenset()) -> str:
    """The last run of up to three meaningful words: no stopwords, numbers or punctuation."""
    runs: list[list[str]] = [[]]
    for token in _TOKEN_RE.findall(text):
        word = token.strip("'’-")
        lowered = word.lower().replace("’", "'")
        if (
            not word
            or not word[0].isalnum()
            or lowered in _STOPWORDS
            or lowered in exclude
            or _NUMBER_RE.fullmatch(word)
        ):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(word)
    meaningful = [run for run in runs if run]
    return " ".join(meaningful[-1][-3:]) if meaningful else ""


_MISSING: Any = object()


def _arguments(schema: Mapping[str, Any], pool: _Pool) -> dict[str, Any]:
    value = _object(schema, pool, schema)
    return value if isinstance(value, dict) else {}


def _object(schema: Mapping[str, Any], pool: _Pool, root: Mapping[str, Any]) -> dict[str, Any]:
    """Every required property, then optional ones the prompt gives a value for, in order."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = [name for name in schema.get("required") or () if isinstance(name, str)]
    values: dict[str, Any] = {}
    for name in required:
        values[name] = _value(properties.get(name, {}), pool, root, required=True)
    for name, prop in properties.items():
        if name not in values:
            value = _value(prop, pool, root, required=False)
            if value is not _MISSING:
                values[name] = value
    order = [*properties, *(name for name in required if name not in properties)]
    return {name: values[name] for name in order if name in values}


def _value(schema: Any, pool: _Pool, root: Mapping[str, Any], *, required: bool) -> Any:
    """A value for one property, or `_MISSING` for an optional one the prompt says nothing of."""
    schema, kind, nullable = _resolve(schema, root)
    default = schema.get("default", None if nullable else _MISSING)
    if "const" in schema:
        return schema["const"] if required else _MISSING
    choices = schema.get("enum")
    if isinstance(choices, list) and choices:
        named = _named_choice(choices, pool.text)
        if named is not _MISSING:
            return named
        if not required:
            return _MISSING
        return default if default is not _MISSING else choices[0]
    if kind in ("integer", "number"):
        raw = pool.number()
        if raw is None:
            if not required:
                return _MISSING
            return default if default is not _MISSING else _clamp(3, schema)
        number: float = float(raw)
        return _clamp(round(number) if kind == "integer" or "." not in raw else number, schema)
    if kind == "string":
        quoted = pool.quote()
        if quoted is not None:
            return quoted
        if not required:
            return _MISSING
        return pool.words
    if not required:
        return _MISSING
    if default is not _MISSING:
        return default
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return _object(schema, pool, root)
    if kind == "null":
        return None
    return pool.words


def _resolve(schema: Any, root: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None, bool]:
    """Follow ``$ref``, ``anyOf`` and ``oneOf`` to the first non-null schema.

    Returns it, its type name (None if it has none) and whether null was an option.
    """
    nullable = False
    for _ in range(16):  # bounds a cyclic $ref
        if not isinstance(schema, Mapping):
            return {}, None, nullable
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for key in ref[2:].split("/"):
                target = target.get(key, {}) if isinstance(target, Mapping) else {}
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            continue
        options = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(options, list) and options:
            nullable = nullable or any(_resolve(o, root)[1] == "null" for o in options)
            chosen = next((o for o in options if _resolve(o, root)[1] != "null"), options[0])
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            schema = {**chosen, **rest} if isinstance(chosen, Mapping) else rest
            continue
        kind = schema.get("type")
        if isinstance(kind, list):
            nullable = nullable or "null" in kind
            kind = next((k for k in kind if k != "null"), "null")
        return schema, kind if isinstance(kind, str) else None, nullable
    return {}, None, nullable


def _named_choice(choices: Sequence[Any], text: str) -> Any:
    """The string choice that ``text`` names first (its segment comes first), or `_MISSING`."""
    best, best_at = _MISSING, len(text)
    for choice in choices:
        if isinstance(choice, str) and choice:
            found = re.search(r"(?<!\w)" + re.escape(choice) + r"(?!\w)", text, re.IGNORECASE)
            if found and found.start() < best_at:
                best, best_at = choice, found.start()
    return best


def _clamp(value: float, schema: Mapping[str, Any]) -> float:
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(high, int | float) and value > high:
        value = high
    return value
