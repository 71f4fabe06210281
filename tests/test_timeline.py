"""The timeline: events → blocks → items, including aborted blocks that keep their content."""

from __future__ import annotations

import pytest

from llm_worker.events import (
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    StopReason,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UsageUpdate,
)
from llm_worker.items import AssistantMessage, ReasoningPart, TextPart, ToolCall, Usage
from llm_worker.timeline import MalformedStream, Timeline


def test_a_full_response_becomes_one_message_then_its_calls() -> None:
    timeline = Timeline(model="m")
    for event in [
        ReasoningStart(provider="anthropic"),
        ReasoningDelta(text="think"),
        ReasoningEnd(signature="sig"),
        TextDelta(text="Hel"),
        TextDelta(text="lo"),
        ToolCallStart(index=0, call_id="c1", name="add"),
        ToolCallDelta(index=0, arguments='{"a":'),
        ToolCallDelta(index=0, arguments=" 1}"),
        ToolCallEnd(index=0),
        UsageUpdate(usage=Usage(input_tokens=3, output_tokens=4)),
        StopReason(reason="tool_use"),
    ]:
        timeline.feed(event)
    timeline.finish()
    message, call = timeline.items()
    assert isinstance(message, AssistantMessage)
    assert message.parts == (
        ReasoningPart(text="think", signature="sig", provider="anthropic"),
        TextPart(text="Hello"),
    )
    assert not message.interrupted
    assert message.stop_reason == "tool_use"
    assert message.usage == Usage(input_tokens=3, output_tokens=4)
    assert isinstance(call, ToolCall)
    assert call.arguments == {"a": 1}
    assert call.complete


def test_abort_current_block_keeps_the_partial_text_and_marks_it_interrupted() -> None:
    timeline = Timeline()
    timeline.feed(TextDelta(text="Half a sen"))
    timeline.abort_current_block()
    [message] = timeline.items()
    assert isinstance(message, AssistantMessage)
    assert message.text == "Half a sen"
    assert message.interrupted
    assert [block.status for block in timeline.blocks] == ["aborted"]


def test_a_call_cut_off_mid_arguments_is_kept_incomplete_with_its_raw_text() -> None:
    timeline = Timeline()
    timeline.feed(ToolCallStart(index=0, call_id="c1", name="add"))
    timeline.feed(ToolCallDelta(index=0, arguments='{"a": 1, "b'))
    timeline.abort_current_block()
    message, call = timeline.items()
    assert isinstance(call, ToolCall)
    assert not call.complete
    assert call.raw_arguments == '{"a": 1, "b'
    assert call.arguments is None
    assert call.parse_error is not None
    assert isinstance(message, AssistantMessage)
    assert message.interrupted


def test_arguments_that_are_not_a_json_object_carry_a_parse_error() -> None:
    timeline = Timeline()
    timeline.feed(ToolCallStart(index=0, call_id="c1", name="add"))
    timeline.feed(ToolCallDelta(index=0, arguments="[1]"))
    timeline.feed(ToolCallEnd(index=0))
    _, call = timeline.items()
    assert isinstance(call, ToolCall)
    assert call.complete
    assert call.parse_error == "arguments must be a JSON object, got list"


def test_empty_arguments_mean_no_arguments() -> None:
    timeline = Timeline()
    timeline.feed(ToolCallStart(index=0, call_id="c1", name="now"))
    timeline.feed(ToolCallEnd(index=0))
    _, call = timeline.items()
    assert isinstance(call, ToolCall)
    assert call.arguments == {}


@pytest.mark.parametrize(
    "events",
    [
        [ToolCallDelta(index=0, arguments="{}")],
        [ToolCallEnd(index=0)],
        [ReasoningEnd(signature="s")],
        [
            ToolCallStart(index=0, call_id="a", name="x"),
            ToolCallStart(index=0, call_id="b", name="x"),
        ],
    ],
)
def test_a_malformed_sequence_raises_malformed_stream(events: list[object]) -> None:
    timeline = Timeline()
    *before, last = events
    for event in before:
        timeline.feed(event)  # type: ignore[arg-type]
    with pytest.raises(MalformedStream):
        timeline.feed(last)  # type: ignore[arg-type]


def test_parallel_calls_interleaved_by_index_are_assembled_separately() -> None:
    timeline = Timeline()
    timeline.feed(ToolCallStart(index=0, call_id="a", name="x"))
    timeline.feed(ToolCallStart(index=1, call_id="b", name="y"))
    timeline.feed(ToolCallDelta(index=1, arguments='{"q": 2}'))
    timeline.feed(ToolCallDelta(index=0, arguments='{"q": 1}'))
    timeline.feed(ToolCallEnd(index=1))
    timeline.feed(ToolCallEnd(index=0))
    _, first, second = timeline.items()
    assert isinstance(first, ToolCall)
    assert isinstance(second, ToolCall)
    assert (first.name, first.arguments) == ("x", {"q": 1})
    assert (second.name, second.arguments) == ("y", {"q": 2})


def test_call_ids_are_made_unique_and_missing_ones_invented_for_every_provider() -> None:
    """One owner for call ids: repeats (in the response or the history) get a suffix, and a call
    the server gave no id gets a fresh one."""
    timeline = Timeline(taken_call_ids={"a"})
    for index, call_id in enumerate(["a", "b", "b", "", ""]):
        timeline.feed(ToolCallStart(index=index, call_id=call_id, name="f"))
        timeline.feed(ToolCallEnd(index=index))
    ids = [item.call_id for item in timeline.items() if isinstance(item, ToolCall)]
    assert ids[:3] == ["a_2", "b", "b_2"]
    assert all(i.startswith("call_") for i in ids[3:])
    assert len(set(ids)) == 5
