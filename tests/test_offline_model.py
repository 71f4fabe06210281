"""The offline model: deterministic, paced answers, tool calls synthesised from schemas."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import anyio
import pytest

from llm_worker.events import (
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
from llm_worker.items import (
    AssistantMessage,
    Item,
    Note,
    TextPart,
    ToolCall,
    ToolResult,
    UserMessage,
)
from llm_worker.models import Model, ModelRequest
from llm_worker.models._in_process import closing_stream
from llm_worker.models.offline import OfflineModel
from llm_worker.tools import ToolSpec

# Marked here as well as by the conftest hook so that parametrized async tests keep their
# parameters (anyio re-creates items marked after collection with the backend as only parameter).
pytestmark = pytest.mark.anyio

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather in a city.",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"$ref": "#/$defs/Unit", "default": "celsius"},
        },
        "required": ["city"],
        "additionalProperties": False,
        "$defs": {"Unit": {"enum": ["celsius", "fahrenheit"], "type": "string"}},
    },
)
COUNT = ToolSpec(
    name="slow_count",
    description="Count slowly up to n.",
    parameters={
        "type": "object",
        "properties": {"n": {"type": "integer"}, "delay": {"type": "number", "default": 0.5}},
        "required": ["n"],
    },
)
TOOLS = (WEATHER, COUNT)


def request(
    *history: Item | str, tools: Sequence[ToolSpec] = (), system: str | None = None
) -> ModelRequest:
    items = [UserMessage(text=item) if isinstance(item, str) else item for item in history]
    return ModelRequest(history=items, tools=tools, system=system)


async def collect(model: OfflineModel, req: ModelRequest) -> list[StreamEvent]:
    async with model.stream(req) as events:
        return [event async for event in events]


def text_of(events: Sequence[StreamEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def calls_of(events: Sequence[StreamEvent]) -> list[tuple[ToolCallStart, list[str]]]:
    """Each call's start event and its argument fragments, checking the start/delta/end order."""
    calls: dict[int, tuple[ToolCallStart, list[str]]] = {}
    ended: set[int] = set()
    for event in events:
        if isinstance(event, ToolCallStart):
            assert event.index not in calls
            calls[event.index] = (event, [])
        elif isinstance(event, ToolCallDelta):
            assert event.index in calls
            assert event.index not in ended
            calls[event.index][1].append(event.arguments)
        elif isinstance(event, ToolCallEnd):
            ended.add(event.index)
    assert ended == set(calls)
    return [calls[index] for index in sorted(calls)]


def matches_schema(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    """Just enough JSON-schema checking for these tests: types, required, enums, $ref."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return matches_schema(value, root["$defs"][name], root)
    if "enum" in schema and value not in schema["enum"]:
        return False
    kinds: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "array": list,
        "object": dict,
    }
    kind = schema.get("type")
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind is not None and not isinstance(value, kinds[kind]):
        return False
    if kind == "object":
        props = schema.get("properties", {})
        if not set(schema.get("required", ())) <= set(value):
            return False
        return all(k in props and matches_schema(v, props[k], root) for k, v in value.items())
    return True


def test_is_a_model_named_offline() -> None:
    model = OfflineModel()
    assert isinstance(model, Model)
    assert model.name == "offline"


@pytest.mark.parametrize("kwargs", [{"pace": -0.1}, {"words_per_chunk": 0}])
def test_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        OfflineModel(**kwargs)


async def test_plain_answer_echoes_the_prompt_and_ends_the_turn() -> None:
    events = await collect(OfflineModel(pace=0), request("What is a cancel scope?"))
    text = text_of(events)
    assert text.startswith('You asked: "What is a cancel scope?".')
    assert "stop it at any moment" in text
    assert 40 <= len(text.split()) <= 80
    assert sum(isinstance(e, TextDelta) for e in events) == len(text.split())  # a word a chunk
    assert events[-2:] == [StopReason(reason="end_turn"), events[-1]]
    assert isinstance(events[-1], UsageUpdate)
    assert not any(isinstance(e, ToolCallStart | ReasoningStart) for e in events)


async def test_same_request_same_events_different_prompt_different_text() -> None:
    req = request("Tell me about trio.", tools=TOOLS)
    first = await collect(OfflineModel(pace=0), req)
    second = await collect(OfflineModel(pace=0), request("Tell me about trio.", tools=TOOLS))
    assert first == second
    other = await collect(OfflineModel(pace=0), request("Tell me about asyncio.", tools=TOOLS))
    assert text_of(other) != text_of(first)


async def test_answer_names_the_tools_it_could_call() -> None:
    text = text_of(await collect(OfflineModel(pace=0), request("hello", tools=TOOLS)))
    assert "get_weather or slow_count" in text


async def test_words_per_chunk_sets_the_delta_size() -> None:
    events = await collect(OfflineModel(pace=0, words_per_chunk=3), request("hi there"))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert all(len(d.split()) == 3 for d in deltas[:-1])
    assert 1 <= len(deltas[-1].split()) <= 3
    assert "3 words at a time" in "".join(deltas)


async def test_one_named_tool_is_called_with_arguments_from_the_prompt() -> None:
    events = await collect(
        OfflineModel(pace=0),
        request("What's the weather in New York? Use get_weather.", tools=TOOLS),
    )
    assert text_of(events) == "I'll call get_weather."
    [(start, fragments)] = calls_of(events)
    assert (start.index, start.call_id, start.name) == (0, "call_1_get_weather", "get_weather")
    assert 2 <= len(fragments) <= 4
    assert json.loads("".join(fragments)) == {"city": "New York"}
    assert events[-2] == StopReason(reason="tool_use")
    assert isinstance(events[-1], UsageUpdate)


async def test_several_named_tools_are_parallel_calls_each_with_its_own_values() -> None:
    prompt = "Use get_weather for Paris in fahrenheit and slow_count to 5, please."
    events = await collect(OfflineModel(pace=0), request(prompt, tools=TOOLS))
    assert text_of(events) == "I'll call get_weather and slow_count in parallel."
    calls = calls_of(events)
    assert [(s.index, s.call_id, s.name) for s, _ in calls] == [
        (0, "call_1_get_weather", "get_weather"),
        (1, "call_2_slow_count", "slow_count"),
    ]
    arguments = [json.loads("".join(fragments)) for _, fragments in calls]
    assert arguments == [{"city": "Paris", "unit": "fahrenheit"}, {"n": 5}]
    for spec, args in zip(TOOLS, arguments, strict=True):
        assert matches_schema(args, spec.parameters, spec.parameters)
    # Every call closes before the next opens, and the stop reason comes after all of them.
    kinds = [type(e).__name__ for e in events if not isinstance(e, TextDelta | ToolCallDelta)]
    assert kinds == [
        "ToolCallStart",
        "ToolCallEnd",
        "ToolCallStart",
        "ToolCallEnd",
        "StopReason",
        "UsageUpdate",
    ]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("please SLOW COUNT to 7", [{"n": 7}]),
        ("Slow_Count 4 with a delay of 0.25", [{"n": 4, "delay": 0.25}]),
        ("slow_counter to 7", []),
        ("slowcount to 7", []),
        ("my_slow_count to 7", []),
    ],
)
async def test_tool_names_match_as_words_case_insensitively_with_spaces(
    prompt: str, expected: list[dict[str, Any]]
) -> None:
    calls = calls_of(await collect(OfflineModel(pace=0), request(prompt, tools=TOOLS)))
    assert [json.loads("".join(fragments)) for _, fragments in calls] == expected


async def test_arguments_are_synthesised_from_every_kind_of_schema() -> None:
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "count": {"type": "integer", "minimum": 1, "maximum": 10},
            "ratio": {"type": "number"},
            "verbose": {"type": "boolean"},
            "fmt": {"enum": ["pdf", "html"], "type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "box": {"$ref": "#/$defs/Box"},
            "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "limit": {"type": "integer", "default": 5},
            "unit": {"$ref": "#/$defs/Unit", "default": "cm"},
        },
        "required": ["title", "count", "ratio", "verbose", "fmt", "tags", "box", "maybe"],
        "$defs": {
            "Box": {
                "type": "object",
                "properties": {"w": {"type": "integer"}, "label": {"type": "string"}},
                "required": ["w"],
            },
            "Unit": {"enum": ["cm", "inch"], "type": "string"},
        },
    }
    spec = ToolSpec(name="make_report", description="Make a report.", parameters=parameters)
    prompt = 'make_report "Quarterly sales" with 42 items, ratio 0.5, in html and inch'
    [(_, fragments)] = calls_of(await collect(OfflineModel(pace=0), request(prompt, tools=[spec])))
    arguments = json.loads("".join(fragments))
    assert arguments == {
        "title": "Quarterly sales",  # the quoted phrase
        "count": 10,  # 42, clamped to the maximum
        "ratio": 0.5,  # the next number
        "verbose": False,
        "fmt": "html",  # the enum value the prompt names
        "tags": [],
        "box": {"w": 3},  # numbers used up: a small default
        "maybe": None,  # nullable and nothing left for it
        "unit": "inch",  # optional, but the prompt names it
    }
    assert matches_schema(arguments, parameters, parameters)


async def test_required_values_have_defaults_when_the_prompt_gives_none() -> None:
    spec = ToolSpec(
        name="lookup",
        description="Look something up.",
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "n": {"type": "integer"},
                "mode": {"enum": ["fast", "slow"]},
                "on": {"type": "boolean"},
            },
            "required": ["query", "n", "mode", "on"],
        },
    )
    [(_, fragments)] = calls_of(
        await collect(OfflineModel(pace=0), request("lookup Ada Lovelace", tools=[spec]))
    )
    assert json.loads("".join(fragments)) == {
        "query": "Ada Lovelace",
        "n": 3,
        "mode": "fast",
        "on": False,
    }


async def test_call_ids_stay_unique_across_the_history() -> None:
    earlier: list[Item] = [
        ToolCall(call_id="call_1_slow_count", name="slow_count", raw_arguments='{"n": 1}'),
        ToolResult(call_id="call_1_slow_count", name="slow_count", content="1"),
    ]
    req = request("slow_count to 2", AssistantMessage(), *earlier, "slow_count to 3", tools=TOOLS)
    [(start, _)] = calls_of(await collect(OfflineModel(pace=0), req))
    assert start.call_id == "call_2_slow_count"


def finished_tools() -> list[Item]:
    return [
        UserMessage(text="get_weather in Rome and slow_count to 5"),
        AssistantMessage(parts=(TextPart(text="I'll call get_weather and slow_count."),)),
        ToolCall(call_id="call_1_get_weather", name="get_weather", raw_arguments="{}"),
        ToolCall(call_id="call_2_slow_count", name="slow_count", raw_arguments="{}"),
        ToolResult(call_id="call_1_get_weather", name="get_weather", content="Sunny, 21 °C"),
    ]


async def test_tool_results_are_summarised_naming_the_ones_that_did_not_finish() -> None:
    cancelled = ToolResult(
        call_id="call_2_slow_count", name="slow_count", content="counted to 2", status="cancelled"
    )
    req = ModelRequest(history=[*finished_tools(), cancelled], tools=TOOLS)
    events = await collect(OfflineModel(pace=0), req)
    text = text_of(events)
    assert "get_weather returned: Sunny, 21 °C" in text
    assert "slow_count was cancelled: counted to 2" in text
    assert "1 of 2 calls did not finish normally (slow_count: cancelled)" in text
    assert not any(isinstance(e, ToolCallStart) for e in events)  # no loop: the prompt is done
    assert events[-2] == StopReason(reason="end_turn")


async def test_summary_of_results_that_all_succeeded() -> None:
    ok = ToolResult(call_id="call_2_slow_count", name="slow_count", content="1 2 3 4 5")
    text = text_of(await collect(OfflineModel(pace=0), request(*finished_tools(), ok)))
    assert "slow_count returned: 1 2 3 4 5" in text
    assert "Every call finished normally." in text


@pytest.mark.parametrize(
    ("history", "acknowledged"),
    [
        (
            [
                UserMessage(text="hi"),
                AssistantMessage(parts=(TextPart(text="You asked"),), interrupted=True),
                Note(kind="interrupted", text="[The previous turn was interrupted.]"),
                UserMessage(text="again"),
            ],
            True,
        ),
        (
            [
                UserMessage(text="hi"),
                AssistantMessage(interrupted=True),
                Note(kind="interrupted", text="[interrupted]"),
                UserMessage(text="next"),
                AssistantMessage(parts=(TextPart(text="done"),)),
                UserMessage(text="again"),
            ],
            False,
        ),
        ([UserMessage(text="hi"), Note(kind="info", text="fyi"), UserMessage(text="x")], False),
    ],
    ids=["note-after-last-answer", "note-before-last-answer", "info-note"],
)
async def test_an_interrupted_note_is_acknowledged_first(
    history: list[Item], acknowledged: bool
) -> None:
    text = text_of(await collect(OfflineModel(pace=0), ModelRequest(history=history)))
    assert text.startswith("(My previous answer was interrupted.) ") is acknowledged
    assert '"again"' in text or '"x"' in text


async def test_interrupted_note_before_a_summary_and_before_tool_calls() -> None:
    note = Note(kind="interrupted", text="[interrupted]")
    ok = ToolResult(call_id="call_2_slow_count", name="slow_count", content="5")
    summary = text_of(await collect(OfflineModel(pace=0), request(*finished_tools(), ok, note)))
    assert summary.startswith("(My previous answer was interrupted.) Here is what the tools")
    req = request("hi", AssistantMessage(interrupted=True), note, "slow_count 2", tools=TOOLS)
    calling = text_of(await collect(OfflineModel(pace=0), req))
    assert calling == "(My previous answer was interrupted.) I'll call slow_count."


@pytest.mark.parametrize("prompt", ["Why is the sky blue?", "slow_count to 2"])
async def test_reasoning_comes_first_as_one_block(prompt: str) -> None:
    events = await collect(OfflineModel(pace=0, reasoning=True), request(prompt, tools=TOOLS))
    assert isinstance(events[0], ReasoningStart)
    end = next(i for i, e in enumerate(events) if isinstance(e, ReasoningEnd))
    deltas = events[1:end]
    assert len(deltas) >= 2
    assert all(isinstance(e, ReasoningDelta) for e in deltas)
    assert not any(isinstance(e, ReasoningStart | ReasoningDelta) for e in events[end:])
    reasoning = "".join(e.text for e in deltas if isinstance(e, ReasoningDelta))
    usage = events[-1]
    assert isinstance(usage, UsageUpdate)
    assert usage.usage.reasoning_tokens == len(reasoning.split())


async def test_usage_counts_request_words_and_produced_words() -> None:
    req = request("one two three", system="Be brief.")
    events = await collect(OfflineModel(pace=0), req)
    usage = events[-1]
    assert isinstance(usage, UsageUpdate)
    assert usage.usage.input_tokens == 5
    assert usage.usage.output_tokens == len(text_of(events).split())
    assert usage.usage.reasoning_tokens == 0


async def test_the_request_history_is_not_mutated() -> None:
    history: list[Item] = [UserMessage(text="slow_count to 3")]
    before = list(history)
    await collect(OfflineModel(pace=0), ModelRequest(history=history, tools=TOOLS))
    assert history == before


@pytest.mark.parametrize("prompt", ["Tell me a story.", "get_weather in Oslo and slow_count 3"])
async def test_cancellation_lands_before_any_event(prompt: str) -> None:
    """Cancelled after k events (pace 0), the stream has delivered exactly k, for every k."""
    req = request(prompt, tools=TOOLS)
    full = await collect(OfflineModel(pace=0, reasoning=True), req)
    for k in range(len(full) + 1):
        got: list[StreamEvent] = []
        with anyio.CancelScope() as scope:
            if k == 0:
                scope.cancel()
            async with OfflineModel(pace=0, reasoning=True).stream(req) as events:
                async for event in events:
                    got.append(event)
                    if len(got) == k:
                        scope.cancel()
        assert got == full[:k]
        assert scope.cancelled_caught is (k < len(full))


async def test_paced_stream_can_be_stopped_mid_answer() -> None:
    model = OfflineModel(pace=0.01)
    req = request("Explain structured concurrency.")
    full = await collect(OfflineModel(pace=0), req)
    got: list[StreamEvent] = []
    with anyio.move_on_after(0.08) as scope:
        async with model.stream(req) as events:
            async for event in events:
                got.append(event)
    assert scope.cancelled_caught
    assert 0 < len(got) < len(full)  # at 0.01 s a chunk the answer needs well over 0.08 s
    assert got == full[: len(got)]
    model.pace = 0  # the same model streams again afterwards, from the start
    assert await collect(model, req) == full


async def test_pace_spaces_out_the_chunks() -> None:
    req = request("slow_count 2", tools=TOOLS)  # a short answer: a few paced chunks
    start = anyio.current_time()
    events = await collect(OfflineModel(pace=0.01), req)
    paced = sum(isinstance(e, TextDelta | ToolCallDelta) for e in events)
    assert anyio.current_time() - start >= paced * 0.01 * 0.9


async def test_leaving_early_closes_the_stream() -> None:
    req = request("Tell me a story.")
    async with OfflineModel(pace=0).stream(req) as events:
        async for _ in events:
            break
    async with OfflineModel(pace=0).stream(req):
        pass  # entered and left without iterating: nothing to do, nothing raised


async def test_closing_stream_closes_the_generator_in_a_shielded_region() -> None:
    """Even when the block is left by a cancellation, the generator's clean-up runs to the end."""
    log: list[str] = []

    async def events() -> AsyncGenerator[StreamEvent, None]:
        try:
            yield TextDelta(text="a")
            yield TextDelta(text="b")
        finally:
            log.append("closing")
            await anyio.sleep(0.01)  # an await in clean-up: cut short without the shield
            log.append("closed")

    with anyio.CancelScope() as scope:
        async with closing_stream(events(), what="test") as stream:
            async for _ in stream:
                scope.cancel()
                await anyio.sleep(1)
    assert scope.cancelled_caught
    assert log == ["closing", "closed"]


def test_the_offline_spec_strings_name_its_variants_and_nothing_else() -> None:
    from llm_worker.models import OfflineModel, UnknownModelSpec, resolve_model

    plain, reasoning = resolve_model("offline"), resolve_model("offline:reasoning")
    assert isinstance(plain, OfflineModel)
    assert isinstance(reasoning, OfflineModel)
    assert (plain.reasoning, reasoning.reasoning) == (False, True)
    with pytest.raises(UnknownModelSpec, match="offline:fast"):
        resolve_model("offline:fast")
