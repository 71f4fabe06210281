"""`UIStreamEncoder` on every kind of run, checked by the AI SDK's reading rules (no HTTP)."""

from __future__ import annotations

from typing import Any

from llm_worker import ModelError, Worker, tool
from llm_worker.errors import RunError
from llm_worker.models import OfflineModel
from llm_worker.testing import Script, ScriptedModel
from llm_worker.web import UIStreamEncoder
from llm_worker.web._messages import ui_messages

from ._chunks import UIMessageReader


@tool
def lookup(query: str) -> str:
    """Look something up.

    Args:
        query: What to look up.
    """
    return f"found {query}"


async def encode_run(
    worker: Worker, text: str | None, *, stop_after: int | None = None
) -> UIMessageReader:
    encoder = UIStreamEncoder("m1")
    reader = UIMessageReader()
    for chunk in encoder.start():
        reader.feed(_parse(chunk))
    seen = 0
    try:
        async with worker.stream(text) as run:
            async for event in run:
                seen += 1
                if stop_after is not None and seen == stop_after:
                    run.cancel("test stop")
                for chunk in encoder.encode(event):
                    reader.feed(_parse(chunk))
    except RunError:
        pass
    reader.feed_line("[DONE]")
    return reader


def _parse(chunk: dict[str, Any]) -> Any:
    import json

    from ._chunks import parse_chunk

    return parse_chunk(json.dumps(chunk))


async def test_reasoning_text_and_tools_map_to_ordered_chunks() -> None:
    worker = Worker(OfflineModel(pace=0, reasoning=True), tools=[lookup])
    reader = await encode_run(worker, "use lookup for cats")
    assert reader.ending == "finish"
    assert reader.reasoning
    assert reader.text
    (call,) = reader.tools.values()
    assert call["state"] == "output-available"
    assert call["output"] == "found cats"
    assert call["raw"]  # the arguments streamed as tool-input-delta


async def test_a_failed_run_ends_with_error_then_finish() -> None:
    model = ScriptedModel(
        [Script.text("partial ").failing(ModelError("provider exploded"), after=2)]
    )
    reader = await encode_run(Worker(model), "hi")
    assert reader.errors
    assert "provider exploded" in reader.errors[0]
    assert [c.type for c in reader.chunks[-2:]] == ["error", "finish"]  # type: ignore[attr-defined]


async def test_a_call_cut_off_mid_arguments_is_an_input_error_and_ends_with_abort() -> None:
    script = Script.tool_calls(("lookup", {"query": "dogs"}), fragments=4)
    model = ScriptedModel([Script(script.stream_events[:3], hang=True)])
    worker = Worker(model, tools=[lookup])
    encoder_reader = await encode_run(worker, "go", stop_after=6)
    assert encoder_reader.ending == "abort"
    assert encoder_reader.data_of("interrupted") == [{"kind": "explicit", "reason": "test stop"}]
    (call,) = encoder_reader.tools.values()
    assert call["state"] == "output-error"


async def test_history_becomes_ui_messages_split_per_run() -> None:
    worker = Worker(OfflineModel(pace=0.001), tools=[lookup])
    await encode_run(worker, "tell me a story", stop_after=8)
    await encode_run(worker, None)  # continue
    await encode_run(worker, "use lookup for owls")
    messages = ui_messages(worker.history, {"kind": "explicit", "reason": "why"})
    assert [m["role"] for m in messages] == ["user", "assistant", "assistant", "user", "assistant"]
    marks = [p for p in messages[1]["parts"] if p["type"] == "data-interrupted"]
    assert len(marks) == 1
    tool_part = next(p for p in messages[4]["parts"] if p["type"] == "tool-lookup")
    assert tool_part["state"] == "output-available"
    assert tool_part["input"] == {"query": "owls"}
