"""The history: appends and their indexes, `repair`, and the texts the model is told."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from llm_worker import AssistantMessage, Note, ToolCall, ToolResult, UserMessage, Worker
from llm_worker.cancel import Cause
from llm_worker.errors import ModelError
from llm_worker.history import (
    MISSING_RESULT,
    History,
    interruption_note,
    recovery_note,
    repair,
)
from llm_worker.items import Item
from llm_worker.testing import history_violations
from llm_worker.testing._scripted import ScriptedModel


def call(call_id: str) -> ToolCall:
    return ToolCall(call_id=call_id, name="t", arguments={})


def result(call_id: str, content: str = "ok") -> ToolResult:
    return ToolResult(call_id=call_id, name="t", content=content)


def test_appending_keeps_the_unanswered_calls_and_every_call_id() -> None:
    seen: list[Sequence[Item]] = []
    history = History([UserMessage(text="hi"), call("a")])
    history.on_append(seen.append)
    history.append([call("b"), result("a")])
    assert [c.call_id for c in history.unanswered] == ["b"]
    assert history.call_ids == {"a", "b"}
    assert len(seen) == 1
    assert len(history) == 4


def test_a_valid_history_is_returned_as_it_is() -> None:
    items = [UserMessage(text="hi"), AssistantMessage(), call("a"), result("a")]
    assert repair(items) is items


def test_repair_answers_missing_results_and_drops_orphans_and_second_answers() -> None:
    items: list[Item] = [
        UserMessage(text="hi"),
        result("orphan"),
        AssistantMessage(),
        call("a"),
        call("b"),
        result("b"),
        result("b", "again"),
        UserMessage(text="next"),
        AssistantMessage(),
        call("c"),
    ]
    repaired = repair(items)
    assert history_violations(list(repaired)) == []
    answers = [(i.call_id, i.content) for i in repaired if isinstance(i, ToolResult)]
    assert answers == [("b", "ok"), ("a", MISSING_RESULT), ("c", MISSING_RESULT)]


@given(
    st.lists(
        st.one_of(
            st.builds(lambda: UserMessage(text="u")),
            st.builds(lambda: AssistantMessage()),
            st.sampled_from("abc").map(call),
            st.sampled_from("abcx").map(result),
        ),
        max_size=12,
    )
)
def test_any_sequence_of_items_is_repaired_into_a_valid_history(items: list[Item]) -> None:
    repaired = repair(items)
    assert history_violations(list(repaired)) == []
    kept = [i for i in repaired if not isinstance(i, ToolResult)]
    assert len(kept) == len([i for i in items if not isinstance(i, ToolResult)])


def test_a_reused_call_id_gets_a_fresh_one_and_its_result_follows_it() -> None:
    repaired = repair([call("a"), result("a", "first"), call("a"), result("a", "second")])
    assert [(i.type, i.call_id) for i in repaired] == [
        ("tool_call", "a"),
        ("tool_result", "a"),
        ("tool_call", "a_2"),
        ("tool_result", "a_2"),
    ]
    assert [i.content for i in repaired if isinstance(i, ToolResult)] == ["first", "second"]


def test_results_that_came_after_a_note_are_moved_up_to_their_calls() -> None:
    """A result is never lost because something was written before it: it joins its call."""
    items: list[Item] = [
        UserMessage(text="hi"),
        call("a"),
        call("b"),
        Note(kind="interrupted", text="[interrupted]"),
        result("b", "b done"),
        result("a", "a done"),
    ]
    repaired = repair(items)
    assert history_violations(list(repaired)) == []
    assert [getattr(i, "content", i.type) for i in repaired[3:]] == ["b done", "a done", "note"]


def test_a_later_response_does_not_start_before_the_earlier_calls_are_answered() -> None:
    items: list[Item] = [call("a"), call("b"), result("a"), call("c"), result("b"), result("c")]
    repaired = repair(items)
    assert history_violations(list(items)) != []
    assert history_violations(list(repaired)) == []
    assert [i.call_id for i in repaired if isinstance(i, ToolCall | ToolResult)] == [
        "a",
        "b",
        "a",
        "b",
        "c",
        "c",
    ]


async def test_the_worker_sends_a_repaired_history_whatever_it_was_given() -> None:
    broken: list[Item] = [UserMessage(text="hi"), AssistantMessage(), call("a"), result("x")]
    model = ScriptedModel(["fine"])
    worker = Worker(model, history=broken)
    await worker.run("go on")
    sent = list(model.requests[0].history)
    assert history_violations(sent) == []


def test_a_failure_is_told_by_its_kind_never_by_its_message() -> None:
    error = ModelError("500: key sk-secret rejected", status_code=500)
    note = interruption_note(Cause.failure(error))
    assert "sk-secret" not in note.text
    assert "the model provider failed (HTTP 500)" in note.text
    stop = interruption_note(Cause.interrupt("explicit", "user pressed Stop"))
    assert "explicit: user pressed Stop" in stop.text
    assert isinstance(stop, Note)


def test_a_recovered_failure_is_never_quoted() -> None:
    assert "sk-secret" not in recovery_note("failed", "failure", "key sk-secret").text
    assert "crash" in recovery_note("crashed", None, None).text
