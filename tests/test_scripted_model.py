"""ScriptedModel: scripted responses in order, error injection, hangs, recorded requests."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import anyio
import pytest

from llm_worker.errors import ModelError
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
from llm_worker.items import Item, UserMessage
from llm_worker.models import Model, ModelRequest
from llm_worker.testing._scripted import Script, ScriptedModel, ScriptExhausted

# Marked here as well as by the conftest hook so that parametrized async tests keep their
# parameters (anyio re-creates items marked after collection with the backend as only parameter).
pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


def ask(text: str = "hi") -> ModelRequest:
    return ModelRequest(history=[UserMessage(text=text)])


async def collect(model: ScriptedModel, req: ModelRequest | None = None) -> list[StreamEvent]:
    async with model.stream(req or ask()) as events:
        return [event async for event in events]


async def collect_until_error(
    model: ScriptedModel, got: list[StreamEvent], req: ModelRequest | None = None
) -> None:
    async with model.stream(req or ask()) as events:
        async for event in events:
            got.append(event)


def test_is_a_model_with_a_name() -> None:
    assert isinstance(ScriptedModel([]), Model)
    assert ScriptedModel([]).name == "scripted"
    assert ScriptedModel([], name="fake:gpt").name == "fake:gpt"


async def test_text_is_split_into_the_requested_deltas_then_stop_and_usage() -> None:
    events = await collect(ScriptedModel([Script.text("Hello there, how are you?", chunks=3)]))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 3
    assert "".join(deltas) == "Hello there, how are you?"
    assert events[3] == StopReason(reason="end_turn")
    assert isinstance(events[4], UsageUpdate)
    assert events[4].usage.input_tokens == 1  # "hi"
    assert events[4].usage.output_tokens == 5
    assert len(events) == 5


async def test_a_plain_string_is_a_one_delta_text_answer() -> None:
    as_string = await collect(ScriptedModel(["Hello there"]))
    as_script = await collect(ScriptedModel([Script.text("Hello there")]))
    assert as_string == as_script
    assert as_string[0] == TextDelta(text="Hello there")


async def test_text_with_reasoning_and_another_stop_reason() -> None:
    script = Script.text("Short.", reasoning="Think first, then answer.", stop="max_tokens")
    events = await collect(ScriptedModel([script]))
    assert isinstance(events[0], ReasoningStart)
    thoughts = [e.text for e in events if isinstance(e, ReasoningDelta)]
    assert "".join(thoughts) == "Think first, then answer."
    assert isinstance(events[len(thoughts) + 1], ReasoningEnd)
    assert StopReason(reason="max_tokens") in events


async def test_tool_calls_are_parallel_with_fragmented_json_and_ids_per_request() -> None:
    script = Script.tool_calls(("add", {"a": 1, "b": 2}), ("search", {"q": "x"}), text="Let me.")
    model = ScriptedModel(["first", script])
    await collect(model)
    events = await collect(model)
    assert events[0] == TextDelta(text="Let me.")
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.call_id, s.name) for s in starts] == [
        (0, "call_2_0", "add"),  # the second request's calls
        (1, "call_2_1", "search"),
    ]
    for index, expected in [(0, {"a": 1, "b": 2}), (1, {"q": "x"})]:
        fragments = [
            e.arguments for e in events if isinstance(e, ToolCallDelta) and e.index == index
        ]
        assert len(fragments) == 2
        assert json.loads("".join(fragments)) == expected
    assert [e.index for e in events if isinstance(e, ToolCallEnd)] == [0, 1]
    assert events[-2] == StopReason(reason="tool_use")
    assert isinstance(events[-1], UsageUpdate)


async def test_tool_calls_keep_given_ids_and_raw_arguments() -> None:
    script = Script.tool_calls(("add", '{"a": 1', "my-id"), fragments=3)
    events = await collect(ScriptedModel([script]))
    assert events[0] == ToolCallStart(index=0, call_id="my-id", name="add")
    fragments = [e.arguments for e in events if isinstance(e, ToolCallDelta)]
    assert len(fragments) == 3
    assert "".join(fragments) == '{"a": 1'  # verbatim, to test invalid arguments


async def test_raw_events_are_sent_exactly() -> None:
    raw: list[StreamEvent] = [TextDelta(text="raw"), StopReason(reason="end_turn")]
    assert await collect(ScriptedModel([Script.events(raw)])) == raw


async def test_error_is_raised_after_the_given_number_of_events() -> None:
    error = Boom("provider fell over")
    model = ScriptedModel([Script.error(error, after=2)])
    got: list[StreamEvent] = []
    with pytest.raises(Boom) as caught:
        await collect_until_error(model, got)
    assert caught.value is error
    assert len(got) == 2
    assert all(isinstance(e, TextDelta) for e in got)


async def test_a_model_error_surfaces_unchanged() -> None:
    error = ModelError("HTTP 529: overloaded", status_code=529, retryable=True)
    with pytest.raises(ModelError) as caught:
        await collect(
            ScriptedModel([Script.text("partial answer", chunks=2).failing(error, after=1)])
        )
    assert caught.value is error


async def test_a_cut_without_error_or_hang_just_ends_the_stream() -> None:
    script = dataclasses.replace(Script.text("a b c", chunks=3), cut=2)
    events = await collect(ScriptedModel([script]))
    assert events == [TextDelta(text="a "), TextDelta(text="b ")]  # no stop reason, no usage


async def test_error_before_any_event_and_after_given_events() -> None:
    got: list[StreamEvent] = []
    with pytest.raises(Boom):
        await collect_until_error(ScriptedModel([Script.error(Boom())]), got)
    assert got == []
    events: list[StreamEvent] = [
        TextDelta(text="a"),
        TextDelta(text="b"),
        StopReason(reason="end_turn"),
    ]
    with pytest.raises(Boom):
        await collect_until_error(
            ScriptedModel([Script.error(Boom(), after=1, events=events)]), got
        )
    assert got == events[:1]


async def test_failing_cuts_any_script_short() -> None:
    script = Script.text("one two three", chunks=3).failing(Boom(), after=2)
    got: list[StreamEvent] = []
    with pytest.raises(Boom):
        await collect_until_error(ScriptedModel([script]), got)
    assert got == [TextDelta(text="one "), TextDelta(text="two ")]


async def test_an_exhausted_script_says_which_request_had_no_response() -> None:
    model = ScriptedModel(["only one"])
    await collect(model)
    with pytest.raises(
        ScriptExhausted, match=r"^ScriptedModel has no response left for request #2$"
    ):
        await collect(model)
    assert issubclass(ScriptExhausted, IndexError)
    assert len(model.requests) == 2


async def test_add_appends_responses_and_remaining_counts_them() -> None:
    model = ScriptedModel(["a"])
    assert model.remaining == 1
    await collect(model)
    assert model.remaining == 0
    model.add("b", Script.text("c"))
    assert model.remaining == 2
    assert (await collect(model))[0] == TextDelta(text="b")


@pytest.mark.parametrize(
    ("script", "delivered"),
    [
        (Script.text("Hello world", chunks=2, then_hang=True), 2),
        (Script.text("Hello world", chunks=2).hanging(after=1), 1),
        (Script.tool_calls(("add", {"a": 1}), then_hang=True), 3),  # start + 2 fragments, no end
        (Script.events([TextDelta(text="x")], then_hang=True), 1),
    ],
    ids=["text-then-hang", "hanging-after-1", "tool-args-never-end", "raw-then-hang"],
)
async def test_a_stalled_stream_can_be_cancelled(script: Script, delivered: int) -> None:
    got: list[StreamEvent] = []
    with anyio.move_on_after(0.5) as scope:  # long enough for a loaded machine to deliver
        await collect_until_error(ScriptedModel([script]), got)
    assert scope.cancelled_caught
    assert len(got) == delivered
    assert not any(isinstance(e, StopReason | ToolCallEnd) for e in got)


async def test_cancellation_can_land_between_any_two_events() -> None:
    script = Script.tool_calls(("add", {"a": 1}), ("sub", {"b": 2}), text="Calling.")
    full = await collect(ScriptedModel([script]))
    for k in range(len(full) + 1):
        got: list[StreamEvent] = []
        with anyio.CancelScope() as scope:
            if k == 0:
                scope.cancel()
            async with ScriptedModel([script]).stream(ask()) as events:
                async for event in events:
                    got.append(event)
                    if len(got) == k:
                        scope.cancel()
        assert got == full[:k]
        assert scope.cancelled_caught is (k < len(full))


async def test_pace_spaces_out_every_event() -> None:
    model = ScriptedModel([Script.text("a b c d", chunks=4)], pace=0.01)
    start = anyio.current_time()
    events = await collect(model)
    assert len(events) == 6
    assert anyio.current_time() - start >= 6 * 0.01 * 0.9


async def test_requests_are_recorded_in_order_with_their_history_copied() -> None:
    model = ScriptedModel(["one", "two"])
    history: list[Item] = [UserMessage(text="first")]
    first = ModelRequest(history=history, system="be brief")
    await collect(model, first)
    history.append(UserMessage(text="second"))
    await collect(model, ModelRequest(history=history))
    assert [len(r.history) for r in model.requests] == [1, 2]
    assert model.requests[0].system == "be brief"
    assert isinstance(model.requests[0].history, tuple)
    assert len(history) == 2  # the caller's list is left alone


async def test_a_response_can_be_computed_from_the_request() -> None:
    def echo(request: ModelRequest) -> str:
        last = request.history[-1]
        assert isinstance(last, UserMessage)
        return f"echo: {last.text}"

    model = ScriptedModel([echo, lambda request: Script.error(Boom())])
    assert (await collect(model, ask("ping")))[0] == TextDelta(text="echo: ping")
    with pytest.raises(Boom):
        await collect(model)


async def test_the_same_script_serves_the_same_events_twice() -> None:
    script = Script.text("same words", chunks=2)
    model = ScriptedModel([script, script])
    assert await collect(model) == await collect(model)


async def test_stream_takes_its_response_when_called_not_when_iterated() -> None:
    model = ScriptedModel(["a", "b"])
    first, second = model.stream(ask()), model.stream(ask())
    async with second as events:
        assert await anext(events) == TextDelta(text="b")
    async with first as events:
        assert await anext(events) == TextDelta(text="a")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Script(hang=True, exception=Boom()), "hang or raise"),
        (lambda: Script(cut=-1), "cut must be"),
        (lambda: Script.tool_calls(), "at least one call"),
        (lambda: ScriptedModel([], pace=-1), "pace must be"),
    ],
)
def test_invalid_scripts_are_rejected(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()
