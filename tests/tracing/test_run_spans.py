"""The span tree of a run, and how a stop is explained in it: who, where, what was kept."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from llm_worker import Cancelled, CancelToken, Hooks, ModelError, Worker, tool, tracing
from llm_worker.errors import Aborted
from llm_worker.hooks import Abort, HookContext
from llm_worker.models import ModelRequest
from llm_worker.testing._scripted import Script, ScriptedModel
from llm_worker.tools import ToolContext

from .conftest import Spans

pytestmark = pytest.mark.timeout(30)

PARTIAL = "Partial answer so far"


def hanging_text() -> Script:
    return Script.text(PARTIAL, chunks=4, then_hang=True)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)


def streamed(worker: Worker) -> bool:
    run = worker._active
    blocks = run.timeline.blocks if run is not None and run.timeline is not None else []
    return bool(blocks) and "".join(blocks[0].chunks) == PARTIAL


counting = threading.Event()


@tool
async def slow_count(limit: int, ctx: ToolContext) -> str:
    """Count to ``limit`` slowly; stop early with partial output when cancelled."""
    counted = 0
    counting.set()
    while counted < limit and not ctx.cancelled:
        await anyio.sleep(0.005)
        counted += 1
    return f"counted to {counted}"


async def run_then(
    worker: Worker, ready: Callable[[], bool], stop: Callable[[], object], **options: object
) -> BaseException:
    """Run ``worker`` until ``ready()``, then ``stop()``; return what the run raised."""
    raised: list[BaseException] = []

    async def run() -> None:
        try:
            await worker.run("hello", **options)  # type: ignore[arg-type]
        except Exception as exc:
            raised.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await wait_for(ready)
        stop()
    assert raised, "the run was not stopped"
    return raised[0]


def cancel_events(spans: Spans) -> list[dict[str, object]]:
    return [dict(e.attributes or {}) for e in spans.run.events if e.name == "llm_worker.cancel"]


async def test_a_finished_run_has_a_span_per_turn_and_tool_with_genai_attributes(
    spans: Spans,
) -> None:
    model = ScriptedModel([Script.tool_calls(("slow_count", {"limit": 2})), "Done."])
    worker = Worker(model, tools=[slow_count])
    result = await worker.run("count")
    assert result.status == "finished"
    run = spans.run
    assert spans.child_names(run) == ["chat scripted", "execute_tool slow_count", "chat scripted"]
    attributes = dict(run.attributes or {})
    assert attributes["llm_worker.run.outcome"] == "finished"
    assert attributes["gen_ai.operation.name"] == "invoke_agent"
    assert attributes["gen_ai.request.model"] == "scripted"
    assert attributes["llm_worker.run.turns"] == 2
    assert attributes["llm_worker.kept.tool_results"] == 1
    assert "llm_worker.cause.kind" not in attributes
    assert run.status.status_code is StatusCode.UNSET
    first, last = (s for s in spans.named("chat"))
    assert dict(first.attributes or {})["gen_ai.response.finish_reasons"] == ("tool_use",)
    assert dict(last.attributes or {})["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert isinstance(dict(last.attributes or {})["gen_ai.usage.input_tokens"], int)
    tool_span = spans.one("execute_tool")
    assert dict(tool_span.attributes or {})["llm_worker.tool.status"] == "ok"
    assert dict(tool_span.attributes or {})["gen_ai.tool.name"] == "slow_count"
    everything = str([dict(s.attributes or {}) for s in spans.all])
    assert "count" not in everything.replace("slow_count", "")  # no content unless asked


async def test_a_run_stopped_mid_stream_says_who_where_and_what_it_kept(spans: Spans) -> None:
    worker = Worker(ScriptedModel([hanging_text()]))
    error = await run_then(
        worker, lambda: streamed(worker), lambda: worker.cancel("the user pressed Stop")
    )
    assert isinstance(error, Cancelled)
    attributes = dict(spans.run.attributes or {})
    assert attributes["llm_worker.run.outcome"] == "cancelled"
    assert attributes["llm_worker.cause.kind"] == "explicit"
    assert attributes["llm_worker.cause.reason"] == "the user pressed Stop"
    assert "task" in str(attributes["llm_worker.cause.origin"])
    assert attributes["llm_worker.stop.noticed_at"] == "streaming"
    assert attributes["llm_worker.kept.interrupted_text_chars"] == len(PARTIAL)
    assert float(attributes["llm_worker.stop.cancel_to_return_ms"]) >= 0  # type: ignore[arg-type]
    assert float(attributes["llm_worker.cleanup.duration_ms"]) >= 0  # type: ignore[arg-type]
    assert spans.run.status.status_code is StatusCode.UNSET  # a stop is not an error
    (event,) = cancel_events(spans)
    assert event["llm_worker.cause.reason"] == "the user pressed Stop"
    turn = spans.one("chat")
    assert dict(turn.attributes or {})["llm_worker.turn.interrupted"] is True
    assert spans.child_names(spans.run) == ["chat scripted", "llm_worker.cleanup"]


async def test_a_run_stopped_mid_tool_from_another_thread_records_that_thread(
    spans: Spans,
) -> None:
    model = ScriptedModel([Script.tool_calls(("slow_count", {"limit": 100000}))])
    worker = Worker(model, tools=[slow_count])

    def press_stop() -> None:
        worker.cancel("stopped from the GUI thread")

    def press_stop_in_a_thread() -> None:
        thread = threading.Thread(target=press_stop, name="gui-thread")
        thread.start()
        thread.join()

    counting.clear()
    error = await run_then(worker, counting.is_set, press_stop_in_a_thread)
    assert isinstance(error, Cancelled)
    attributes = dict(spans.run.attributes or {})
    assert attributes["llm_worker.cause.kind"] == "explicit"
    assert "gui-thread" in str(attributes["llm_worker.cause.origin"])
    assert attributes["llm_worker.stop.noticed_at"] == "running tools"
    assert attributes["llm_worker.kept.partial_outputs"] == 1
    (event,) = cancel_events(spans)
    assert event["llm_worker.cancel.thread"] == "gui-thread"
    tool_attributes = dict(spans.one("execute_tool").attributes or {})
    assert tool_attributes["llm_worker.tool.status"] == "interrupted"
    assert int(tool_attributes["llm_worker.tool.partial_output_chars"]) > 0  # type: ignore[call-overload]


async def test_a_run_stopped_by_its_deadline_says_deadline(spans: Spans) -> None:
    worker = Worker(ScriptedModel([hanging_text()]))
    with pytest.raises(Cancelled):
        await worker.run("hello", timeout=0.2)
    attributes = dict(spans.run.attributes or {})
    assert attributes["llm_worker.cause.kind"] == "deadline"
    assert "timed out" in str(attributes["llm_worker.cause.reason"])
    assert attributes["llm_worker.stop.noticed_at"] == "streaming"
    assert attributes["llm_worker.kept.interrupted_text_chars"] == len(PARTIAL)
    (event,) = cancel_events(spans)
    assert event["llm_worker.cause.kind"] == "deadline"


class RefuseRequests(Hooks):
    async def before_llm_request(self, ctx: HookContext, request: ModelRequest) -> Abort:
        return Abort("the budget is spent")


async def test_a_run_aborted_by_a_hook_names_the_hook(spans: Spans) -> None:
    worker = Worker(ScriptedModel(["never"]), hooks=[RefuseRequests()])
    with pytest.raises(Aborted):
        await worker.run("hello")
    attributes = dict(spans.run.attributes or {})
    assert attributes["llm_worker.run.outcome"] == "aborted"
    assert attributes["llm_worker.cause.kind"] == "aborted"
    assert attributes["llm_worker.cause.reason"] == "the budget is spent"
    assert "RefuseRequests.before_llm_request" in str(attributes["llm_worker.cause.origin"])
    assert attributes["llm_worker.stop.noticed_at"] == "hook before_llm_request"
    assert attributes["llm_worker.kept.items"] == 1  # the user message
    hook = spans.one("hook before_llm_request")
    assert dict(hook.attributes or {})["llm_worker.cause.kind"] == "aborted"
    assert not cancel_events(spans)  # nobody called cancel()


async def test_an_outer_cancellation_is_external_and_the_run_span_still_ends(
    spans: Spans,
) -> None:
    worker = Worker(ScriptedModel([hanging_text()]))
    async with anyio.create_task_group() as group:
        group.start_soon(worker.run, "hello")
        await wait_for(lambda: streamed(worker))
        group.cancel_scope.cancel()
    attributes = dict(spans.run.attributes or {})
    assert attributes["llm_worker.cause.kind"] == "external"
    assert attributes["llm_worker.run.raised"] == anyio.get_cancelled_exc_class().__name__
    assert attributes["llm_worker.kept.interrupted_text_chars"] == len(PARTIAL)
    (event,) = cancel_events(spans)
    assert event["llm_worker.cause.kind"] == "external"


async def test_a_superseded_run_says_superseded_and_the_newer_run_finishes(
    spans: Spans,
) -> None:
    worker = Worker(ScriptedModel([hanging_text(), "Newer answer."]))
    errors: list[BaseException] = []

    async def first() -> None:
        try:
            await worker.run("first")
        except Cancelled as exc:
            errors.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        await wait_for(lambda: streamed(worker))
        result = await worker.run("second", supersede=True)
    assert result.output == "Newer answer."
    assert len(errors) == 1
    runs = sorted(spans.named("invoke_agent"), key=lambda s: s.start_time or 0)
    older, newer = (dict(s.attributes or {}) for s in runs)
    assert older["llm_worker.cause.kind"] == "superseded"
    assert older["llm_worker.kept.interrupted_text_chars"] == len(PARTIAL)
    assert newer["llm_worker.run.outcome"] == "finished"


async def test_a_model_failure_is_an_error_span(spans: Spans) -> None:
    model = ScriptedModel([Script.text("Half").failing(ModelError("the server fell over"))])
    worker = Worker(model)
    with pytest.raises(ModelError):
        await worker.run("hello")
    run = spans.run
    attributes = dict(run.attributes or {})
    assert attributes["llm_worker.run.outcome"] == "failed"
    assert attributes["llm_worker.cause.kind"] == "failure"
    assert attributes["error.type"] == "ModelError"
    assert run.status.status_code is StatusCode.ERROR


async def test_a_cancel_before_the_first_step_is_an_event_of_the_run(spans: Spans) -> None:
    token = CancelToken()
    token.cancel("cancelled before it began")
    with pytest.raises(Cancelled):
        await Worker(ScriptedModel(["never"])).run("hello", token=token)
    (event,) = cancel_events(spans)
    assert event["llm_worker.cause.kind"] == "explicit"
    assert "cancelled before it began" in str(event["llm_worker.cause.text"])
    attributes = dict(spans.run.attributes or {})
    assert attributes["llm_worker.stop.noticed_at"] == "starting the turn"
    assert not spans.named("chat")  # no request was made


class BrokenTracer(trace.Tracer):
    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        raise RuntimeError("the tracing backend is broken")

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the tracing backend is broken")


class BrokenProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return BrokenTracer()


async def test_a_broken_tracer_never_changes_a_run(caplog: pytest.LogCaptureFixture) -> None:
    tracing.instrument(BrokenProvider())
    try:
        worker = Worker(ScriptedModel([hanging_text(), "Again."]))
        error = await run_then(worker, lambda: streamed(worker), lambda: worker.cancel("stop"))
        assert isinstance(error, Cancelled)
        assert (await worker.run("again")).output == "Again."
    finally:
        tracing.uninstrument()
    assert "the run goes on" in caplog.text
