"""What crosses Temporal: results and errors come back as a local run would give them."""

from __future__ import annotations

from typing import Any

import pytest

from llm_worker import (
    Aborted,
    AssistantMessage,
    Cancelled,
    Cause,
    HookFailed,
    LLMWorkerError,
    ModelError,
    RunError,
    RunResult,
    TextPart,
    ToolFailed,
    ToolResult,
    UserMessage,
    Worker,
    tool,
)
from llm_worker.durable.temporal import RemoteError
from llm_worker.durable.temporal._payloads import (
    ItemsRef,
    decode_error,
    decode_result,
    encode_error,
    encode_result,
)
from llm_worker.testing import Script, ScriptedModel, cancellation_sweep

ITEMS = (
    UserMessage(text="hi"),
    AssistantMessage(parts=(TextPart(text="hel"),), interrupted=True),
    ToolResult(call_id="c1", name="t", content="partial", status="interrupted"),
)


def partial() -> RunResult:
    return RunResult(status="interrupted", items=ITEMS, turns=1, run_id="r1")


@pytest.mark.parametrize(
    "error",
    [
        Cancelled("stopped", cause=Cause.interrupt("superseded", "newer input", "temporal")),
        Cancelled("stopped", cause=Cause.interrupt("deadline", "the run timed out after 1s")),
        Aborted("no", cause=Cause.interrupt("aborted", "a hook said no")),
        ModelError("429", status_code=429, retryable=True),
        ToolFailed("boom", cause=Cause.failure(ValueError("bad value"), origin="tool t")),
        HookFailed(
            "hook",
            cause=Cause.sequential(
                Cause.failure(KeyError("k")), Cause.parallel(Cause.interrupt("parent", "p"))
            ),
        ),
    ],
    ids=lambda error: type(error).__name__,
)
def test_an_error_comes_back_with_its_class_cause_and_partial(error: RunError) -> None:
    error.partial = partial()
    error.cleanup_errors = [TimeoutError("on_abort overran")]
    decoded = decode_error(encode_error(error))
    assert type(decoded) is type(error)
    assert str(decoded) == str(error)
    assert str(decoded.cause) == str(error.cause)
    assert decoded.cause.kind == error.cause.kind
    assert decoded.partial == error.partial
    assert [str(e) for e in decoded.cleanup_errors] == ["on_abort overran"]
    for original, remote in zip(error.cause.failures(), decoded.cause.failures(), strict=True):
        assert isinstance(remote, RemoteError)
        assert remote.type_name == type(original).__name__
    if isinstance(error, ModelError):
        assert isinstance(decoded, ModelError)
        assert (decoded.status_code, decoded.retryable) == (429, True)


def test_a_result_kept_by_reference_is_read_through_the_loader() -> None:
    result = RunResult(status="finished", items=ITEMS, turns=2, run_id="r2")
    encoded = encode_result(result, items_ref=ItemsRef("chat", 3, 6))
    assert "items" not in encoded
    asked: list[ItemsRef] = []

    def load(ref: ItemsRef) -> list[Any]:
        asked.append(ref)
        return list(ITEMS)

    assert decode_result(encoded, load) == result
    assert asked == [ItemsRef("chat", 3, 6)]
    with pytest.raises(LLMWorkerError, match="pass store="):
        decode_result(encoded)


@tool
async def lookup(key: str) -> str:
    """Look ``key`` up."""
    return f"value of {key}"


async def test_the_cancellation_sweep_holds_through_the_payload_conversion(
    record_sweep: Any,
) -> None:
    def make_worker() -> Worker:
        model = ScriptedModel(
            [Script.tool_calls(("lookup", {"key": "a"})), Script.text("Found a.", chunks=3), "Ok."]
        )
        return Worker(model, tools=[lookup])

    def check(worker: Worker, outcome: object) -> None:
        if isinstance(outcome, RunError):
            decoded = decode_error(encode_error(outcome))
            assert type(decoded) is type(outcome)
            assert decoded.cause.kind == outcome.cause.kind
            assert decoded.partial == outcome.partial
        elif isinstance(outcome, RunResult):
            assert decode_result(encode_result(outcome)) == outcome

    report = await cancellation_sweep(make_worker, "Look a up.", check=check)
    record_sweep("durable: payload conversion (cancel)", report)
    report.raise_for_violations()
    assert report.checkpoints > 5
