"""Where spans nest (a tool's own spans under its call, async and in a thread), what a trace
leaves out (message content unless asked, keys always), and that nothing is traced or even
imported without a tracer provider."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from llm_worker import Hooks, ModelError, Worker, tool
from llm_worker._observe import NO_OBSERVER
from llm_worker.hooks import HookContext
from llm_worker.models import ModelRequest, OpenAIChatModel
from llm_worker.testing import FakeProviderServer
from llm_worker.testing._fake_replies import Reply
from llm_worker.testing._scripted import Script, ScriptedModel

from .conftest import Spans

pytestmark = pytest.mark.timeout(30)

CASSETTES = Path(__file__).resolve().parent.parent / "fixtures" / "cassettes"
KEY = "sk-live-THIS-KEY-MUST-NEVER-BE-IN-A-TRACE-0123456789"


def tools_making_spans(spans: Spans) -> list[object]:
    tracer = spans.provider.get_tracer("user-tools")

    @tool
    async def fetch_async(url: str) -> str:
        """An async tool with a span of its own."""
        with tracer.start_as_current_span("fetch inside the async tool"):
            await anyio.lowlevel.checkpoint()
        return "fetched"

    @tool
    def parse_in_thread(text: str) -> str:
        """A sync tool (it runs in a thread) with a span of its own."""
        with tracer.start_as_current_span("parse inside the sync tool") as span:
            span.set_attribute("thread", threading.current_thread().name)
        return "parsed"

    return [fetch_async, parse_in_thread]


async def test_async_and_sync_tools_spans_nest_under_their_call_spans(spans: Spans) -> None:
    script = Script.tool_calls(("fetch_async", {"url": "u"}), ("parse_in_thread", {"text": "t"}))
    worker = Worker(ScriptedModel([script, "Done."]), tools=tools_making_spans(spans))
    await worker.run("go")
    async_call = spans.one("execute_tool fetch_async")
    sync_call = spans.one("execute_tool parse_in_thread")
    assert spans.child_names(async_call) == ["fetch inside the async tool"]
    assert spans.child_names(sync_call) == ["parse inside the sync tool"]
    inner = spans.one("parse inside the sync tool")
    in_thread = dict(inner.attributes or {})["thread"]
    assert in_thread != threading.current_thread().name
    assert dict(sync_call.attributes or {})["llm_worker.tool.thread"] == in_thread
    for call in (async_call, sync_call):
        assert call.parent is not None
        assert call.parent.span_id == spans.run.context.span_id  # type: ignore[union-attr]


async def test_a_hooks_own_spans_nest_under_the_hook_span(spans: Spans) -> None:
    tracer = spans.provider.get_tracer("user-hooks")

    class Audit(Hooks):
        async def before_llm_request(self, ctx: HookContext, request: ModelRequest) -> None:
            with tracer.start_as_current_span("audit"):
                await anyio.lowlevel.checkpoint()

    await Worker(ScriptedModel(["Hi."]), hooks=[Audit()]).run("hello")
    assert spans.child_names(spans.one("hook before_llm_request")) == ["audit"]
    assert spans.child_names(spans.run) == ["hook before_llm_request", "chat scripted"]


async def test_the_run_span_is_a_child_of_the_callers_current_span(spans: Spans) -> None:
    tracer = spans.provider.get_tracer("application")
    with tracer.start_as_current_span("handle request") as outer:
        await Worker(ScriptedModel(["Hi."])).run("hello")
    run = spans.run
    assert run.parent is not None
    assert run.parent.span_id == outer.get_span_context().span_id


async def test_content_is_in_spans_only_when_asked_for(spans_with_content: Spans) -> None:
    worker = Worker(ScriptedModel(["The answer is 42."]), system="Be brief.")
    await worker.run("What is the answer?")
    run = dict(spans_with_content.run.attributes or {})
    assert "What is the answer?" in str(run["gen_ai.input.messages"])
    assert "The answer is 42." in str(run["gen_ai.output.messages"])
    turn = dict(spans_with_content.one("chat").attributes or {})
    assert "Be brief." in str(turn["gen_ai.input.messages"])
    assert "The answer is 42." in str(turn["gen_ai.output.messages"])


async def test_keys_never_appear_in_a_trace_even_with_content(
    spans_with_content: Spans,
) -> None:
    with FakeProviderServer(cassettes_dir=CASSETTES) as server:
        server.enqueue(Reply.cassette("openai-chat/text-include-usage"))
        server.enqueue(Reply.error(401, message=f"Incorrect API key provided: {KEY}"))
        model = OpenAIChatModel("gpt-4o-mini", base_url=server.openai_base_url, api_key=KEY)
        async with Worker(model) as worker, model:
            await worker.run("hello")
            with pytest.raises(ModelError):
                await worker.run("again")
    chat = dict(spans_with_content.named("chat")[0].attributes or {})
    assert chat["gen_ai.system"] == "openai"
    assert chat["gen_ai.request.model"] == "gpt-4o-mini"
    failed = dict(spans_with_content.named("invoke_agent")[1].attributes or {})
    assert failed["llm_worker.cause.kind"] == "failure"
    for span in spans_with_content.all:
        text = str(dict(span.attributes or {})) + str(
            [dict(e.attributes or {}) for e in span.events]
        )
        text += str(span.status.description)
        assert KEY not in text, span.name


async def test_without_a_tracer_provider_a_run_has_the_no_op_observer() -> None:
    seen: list[object] = []

    class Peek(Hooks):
        async def on_prompt_submit(self, ctx: HookContext, message: object) -> None:
            run = worker._active
            assert run is not None
            seen.append(run.observer)

    worker = Worker(ScriptedModel(["Hi."]), hooks=[Peek()])
    await worker.run("hello")  # opentelemetry is imported in this process, but not configured
    assert seen == [NO_OBSERVER]


def test_an_untraced_program_never_imports_opentelemetry() -> None:
    program = (
        "import sys, anyio\n"
        "from llm_worker import Worker\n"
        "from llm_worker.models import OfflineModel\n"
        "async def main():\n"
        "    worker = Worker(OfflineModel(pace=0), tools=[])\n"
        "    await worker.run('hello')\n"
        "anyio.run(main)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
        "print('clean')\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"
