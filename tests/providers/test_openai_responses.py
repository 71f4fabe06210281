"""OpenAIResponsesModel over real HTTP (FakeProviderServer on 127.0.0.1) through the official SDK.

Invariants under test:
* Every recorded Responses stream replays, inside a real `Worker`, into the items the stream's own
  terminal event lists (text, reasoning summaries with their encrypted content, parallel function
  calls, ``response.incomplete``); expectations are read from the cassette files, never from the
  code under test.
* The request after any interruption — cancel mid-text, mid-reasoning, mid-arguments, during a
  tool, a model error — is valid for the Responses API (`assert_valid_input`): every function call
  answered once and in order, reasoning only with encrypted content and followed by the item it
  preceded, the new input last.
* Every fault is a typed `ModelError` with ``.partial`` keeping what was streamed, and leaves the
  worker reusable; transient ones are retried (a `Retrying` event), never by the SDK as well.
* Cancelling at every scheduler checkpoint (the cancellation sweep) keeps the worker's invariants
  and a valid next request; every HTTP response the model opened is closed.
* Any split of a real stream gives the same events; garbage gives a typed error, never a crash.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import httpx2
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_worker import Cancelled, ModelError, Worker, tool
from llm_worker.events import (
    ReasoningDelta,
    ReasoningEnd,
    ReasoningStart,
    Retrying,
    StopReason,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolStarted,
)
from llm_worker.history import repair
from llm_worker.items import (
    AssistantMessage,
    Item,
    Note,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolResult,
    Usage,
    UserMessage,
)
from llm_worker.models import (
    MissingCredentials,
    ModelRequest,
    ModelSettings,
    RetryPolicy,
    Timeouts,
    resolve_model,
)
from llm_worker.models.openai_responses import (
    OpenAIResponsesModel,
    convert_history,
    convert_tools,
    is_reasoning_model,
    translate_stream,
)
from llm_worker.result import RunResult
from llm_worker.testing import FakeProviderServer, Reply, cancellation_sweep
from llm_worker.tools import ToolContext, ToolSpec

from .conftest import CASSETTES, SDK_GENERATOR_WARNINGS, cassette_names, request_fixture
from .conftest import sse_payloads as payloads

pytestmark = [pytest.mark.anyio, SDK_GENERATOR_WARNINGS]

PATH = "/v1/responses"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=1.0)
TEXT = "openai-responses/text"
SUMMARY = "openai-responses/reasoning-summary-text"
ENCRYPTED = "openai-responses/reasoning-encrypted-function-call"
PARALLEL = "openai-responses/parallel-function-calls"
INCOMPLETE = "openai-responses/incomplete-max-output-tokens"
DONE = Reply.responses_text(["Carrying ", "on."])


# --- tools whose names match the recorded function calls -----------------------------------------


@tool
async def final_result(result: int) -> str:
    """The final answer."""
    return f"result is {result}"


@tool
async def secret_retrieval_tool(password: str) -> str:
    """Look up the secret for a password."""
    return f"secret-of-{password}"


@tool(name="final_result")
async def slow_final_result(result: int, ctx: ToolContext) -> str:
    """Report slowly; when cancelled, stop and say so (partial output)."""
    await ctx.token.wait()
    return f"gave up reporting {result}"


TOOLS: list[Any] = [final_result, secret_retrieval_tool]


# --- helpers ------------------------------------------------------------------------------------


def expected_from_cassette(name: str) -> dict[str, Any]:
    """What the stream's terminal event says it produced: its output items, usage and status.

    Reasoning is taken from its ``output_item.done`` event: the terminal event re-encrypts the
    blob (same item, different bytes), and the model keeps the one that streamed first.
    """
    events = [data for _, data in payloads(name)]
    terminal = next(
        data for data in events if data["type"] in ("response.completed", "response.incomplete")
    )
    response = terminal["response"]
    output = response["output"]
    reasoning = [
        data["item"]
        for data in events
        if data["type"] == "response.output_item.done" and data["item"]["type"] == "reasoning"
    ]
    assert [r["id"] for r in reasoning] == [i["id"] for i in output if i["type"] == "reasoning"]
    return {
        "reasoning": reasoning,
        "text": "".join(
            part["text"]
            for item in output
            if item["type"] == "message"
            for part in item["content"]
            if part["type"] == "output_text"
        ),
        "calls": [item for item in output if item["type"] == "function_call"],
        "usage": response["usage"],
        "incomplete": (response.get("incomplete_details") or {}).get("reason"),
    }


def recorded_prompt(name: str) -> str:
    recorded = request_fixture(name)
    return str(recorded["input"][-1]["content"])


def assert_valid_input(items: Sequence[dict[str, Any]]) -> None:
    """The rules a stateless Responses request must keep, whatever interrupted the last turn."""
    pending: list[str] = []
    seen: set[str] = set()
    for position, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "function_call_output":
            assert item["call_id"] in pending, f"item {position}: an output for no pending call"
            pending.remove(item["call_id"])
            continue
        if kind == "function_call":
            assert item["call_id"] not in seen, f"item {position}: a repeated call id"
            seen.add(item["call_id"])
            pending.append(item["call_id"])
            json.loads(item["arguments"])  # the API wants JSON arguments
            continue
        assert not pending, f"item {position} ({kind}) before the outputs of {pending}"
        if kind == "reasoning":
            assert item["encrypted_content"], f"item {position}: reasoning it cannot decrypt"
            rest = [i for i in items[position + 1 :] if i.get("type") != "reasoning"]
            follower = rest[0] if rest else {}
            assert follower.get("type") == "function_call" or follower.get("role") == "assistant", (
                f"item {position}: reasoning without its following item"
            )
        elif item["role"] == "assistant":
            assert item["content"][0]["text"], f"item {position}: an empty assistant message"
        else:
            assert item["role"] == "user"
            assert isinstance(item["content"], str)
    assert not pending, f"unanswered function calls at the end: {pending}"
    last = items[-1]
    assert last.get("role") == "user" or last.get("type") == "function_call_output", (
        "the request must end with the new input or the outputs of the calls"
    )


def sent(server: FakeProviderServer) -> list[dict[str, Any]]:
    return [r.json for r in server.requests if r.path == PATH]


@pytest.fixture
async def models(
    fake_server: FakeProviderServer,
) -> AsyncIterator[Callable[..., OpenAIResponsesModel]]:
    """A factory of models pointed at the fake server; each is closed after the test."""
    made: list[OpenAIResponsesModel] = []

    def make(model: str = "gpt-5", **kwargs: Any) -> OpenAIResponsesModel:
        kwargs.setdefault("retry", FAST_RETRY)
        made.append(
            OpenAIResponsesModel(
                model, base_url=fake_server.openai_base_url, api_key="test-key", **kwargs
            )
        )
        return made[-1]

    yield make
    for model in made:
        await model.aclose()


async def cancel_at(worker: Worker, input: str, trigger: type, nth: int = 1) -> Cancelled:
    """Run ``input`` and cancel the run when the ``nth`` ``trigger`` event arrives."""
    seen = 0
    async with worker.stream(input) as run:
        async for event in run:
            if isinstance(event, trigger):
                seen += 1
                if seen == nth:
                    run.cancel("user pressed stop")
    assert isinstance(run.error, Cancelled), run.error
    return run.error


# --- construction and request body ---------------------------------------------------------------


def test_missing_key_is_reported_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingCredentials, match="OPENAI_API_KEY"):
        OpenAIResponsesModel("gpt-5")
    with pytest.raises(MissingCredentials):
        resolve_model("openai-responses:gpt-5")


async def test_client_settings_and_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://example.invalid/v1")
    timeouts = Timeouts(connect=1.5, first_event=9.0, idle=4.0)
    model = OpenAIResponsesModel("gpt-5", timeouts=timeouts)
    assert model.name == "openai-responses:gpt-5"
    assert model.client.api_key == "sk-env"
    assert str(model.client.base_url).startswith("http://example.invalid/v1")
    assert model.client.max_retries == 0  # our retries run instead
    assert model.client.timeout == timeouts.for_httpx()
    await model.aclose()
    assert model.client.is_closed()

    resolved = resolve_model("openai-responses:o4-mini")
    assert isinstance(resolved, OpenAIResponsesModel)
    assert resolved.name == "openai-responses:o4-mini"
    await resolved.aclose()

    own = openai.AsyncOpenAI(api_key="mine", max_retries=5)
    wrapped = OpenAIResponsesModel("gpt-4o", client=own)
    assert wrapped.client is own  # used as it is ...
    assert own.max_retries == 5
    await wrapped.aclose()
    assert not own.is_closed()  # ... and stays the caller's to close
    await own.close()


def test_request_params() -> None:
    spec = ToolSpec("lookup", "Find it.", {"type": "object", "properties": {}}, strict=True)
    request = ModelRequest(
        history=(UserMessage(text="hi"),),
        system="Be brief.",
        tools=(spec,),
        settings=ModelSettings(max_tokens=50, temperature=0.2),
    )
    reasoning = {"effort": "low", "summary": "auto"}
    body = OpenAIResponsesModel("gpt-5", api_key="k", reasoning=reasoning).request_params(request)
    assert body == {
        "model": "gpt-5",
        "input": [{"role": "user", "content": "hi"}],
        "stream": True,
        "store": False,
        "instructions": "Be brief.",
        "tools": [
            {
                "type": "function",
                "name": "lookup",
                "description": "Find it.",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            }
        ],
        "include": ["reasoning.encrypted_content"],
        "reasoning": reasoning,
        "max_output_tokens": 50,
        "temperature": 0.2,
    }
    assert convert_tools([spec]) == body["tools"]
    # OpenAI answers 400 when a model that does not reason is asked for encrypted reasoning.
    bare = OpenAIResponsesModel("gpt-4o", api_key="k").request_params(ModelRequest(history=()))
    assert bare == {"model": "gpt-4o", "input": [], "stream": True, "store": False}
    forced = OpenAIResponsesModel("my-deployment", api_key="k", include_encrypted_reasoning=True)
    assert forced.request_params(ModelRequest(history=()))["include"] == [
        "reasoning.encrypted_content"
    ]


@pytest.mark.parametrize(
    ("model", "reasons"),
    [
        ("gpt-5", True),
        ("gpt-5-mini", True),
        ("o4-mini", True),
        ("o3", True),
        ("openai/gpt-oss-120b", True),
        ("gpt-5-chat-latest", False),
        ("gpt-4o", False),
        ("gpt-4.1-mini", False),
        ("llama3.1", False),
    ],
)
def test_reasoning_models(model: str, reasons: bool) -> None:
    assert is_reasoning_model(model) is reasons


async def test_entering_the_stream_does_no_io(
    fake_server: FakeProviderServer, models: Callable[..., OpenAIResponsesModel]
) -> None:
    async with models().stream(ModelRequest(history=(UserMessage(text="hi"),))):
        pass
    assert fake_server.stats.requests == 0


# --- history conversion -------------------------------------------------------------------------


def ours(text: str = "thought", enc: str | None = "ENC", rid: str = "rs_1") -> ReasoningPart:
    return ReasoningPart(
        text=text, encrypted_content=enc, provider_id=rid, provider="openai-responses"
    )


def call(call_id: str, raw: str = '{"x": 1}', *, complete: bool = True) -> ToolCall:
    arguments = json.loads(raw) if complete else None
    return ToolCall(
        call_id=call_id, name="f", raw_arguments=raw, arguments=arguments, complete=complete
    )


def result(call_id: str, content: str = "ok") -> ToolResult:
    return ToolResult(call_id=call_id, name="f", content=content)


def reasoning_item(text: str = "thought", enc: str = "ENC", rid: str = "rs_1") -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"type": "reasoning", "id": rid, "summary": summary, "encrypted_content": enc}


def fc(call_id: str, arguments: str = '{"x": 1}') -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "f", "arguments": arguments}


def out(call_id: str, output: str = "ok") -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "output_text", "text": text}]}


def test_history_conversion() -> None:
    history: list[Item] = [
        UserMessage(text="go"),
        AssistantMessage(parts=(ours("plan"), TextPart(text="Let me look."))),
        call("a"),
        call("b", "{}"),
        result("a", "A"),
        result("b", "B"),
        AssistantMessage(
            parts=(
                ReasoningPart(text="claude thinks", signature="sig", provider="anthropic"),
                ReasoningPart(text="no blob", provider="openai-responses", provider_id="rs_2"),
                TextPart(text="Done."),
            )
        ),
        Note(kind="interrupted", text="[interrupted]"),
        UserMessage(text="more"),
    ]
    frozen = tuple(history)
    assert convert_history(frozen) == [
        user("go"),
        reasoning_item("plan"),
        assistant("Let me look."),
        fc("a"),
        fc("b", "{}"),
        out("a", "A"),
        out("b", "B"),
        assistant("Done."),  # reasoning from another provider, or without its blob, stays home
        user("[interrupted]"),
        user("more"),
    ]
    assert tuple(history) == frozen  # pure: the history is not touched


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        pytest.param(  # cut mid-text: the text is what was said; its reasoning cannot be sent
            [AssistantMessage(parts=(ours(), TextPart(text="Half a")), interrupted=True)],
            [assistant("Half a")],
            id="text-cut-off",
        ),
        pytest.param(  # reasoning, then text that finished, then a call that was cut off
            [
                AssistantMessage(parts=(ours(), TextPart(text="Whole.")), interrupted=True),
                call("a", '{"x": ', complete=False),
                result("a", "cancelled"),
            ],
            [reasoning_item(), assistant("Whole."), fc("a", "{}"), out("a", "cancelled")],
            id="call-cut-off-after-text",
        ),
        pytest.param(  # reasoning right before a call whose arguments were cut off
            [
                AssistantMessage(parts=(ours(),), interrupted=True),
                call("a", '{"x": ', complete=False),
                result("a", "cancelled"),
            ],
            [fc("a", "{}"), out("a", "cancelled")],
            id="reasoning-before-cut-call",
        ),
        pytest.param(  # reasoning right before a whole call (cancelled while the tool ran)
            [
                AssistantMessage(parts=(ours(),), interrupted=True),
                call("a"),
                result("a", "interrupted"),
            ],
            [reasoning_item(), fc("a"), out("a", "interrupted")],
            id="reasoning-before-whole-call",
        ),
        pytest.param(  # interrupted after the reasoning, before anything else
            [AssistantMessage(parts=(ours(),), interrupted=True)],
            [],
            id="reasoning-alone",
        ),
        pytest.param(  # interrupted before a word
            [AssistantMessage(parts=(), interrupted=True)],
            [],
            id="empty",
        ),
        pytest.param(  # a broken history: an unanswered call, an orphan and a repeated result
            [
                result("ghost"),
                AssistantMessage(parts=()),
                call("a"),
                call("a"),
                result("b"),
            ],
            [
                fc("a"),
                fc("a_2"),
                out("a", "Not executed: no result was recorded for this call."),
                out("a_2", "Not executed: no result was recorded for this call."),
            ],
            id="repaired",
        ),
        pytest.param(  # arguments that are not JSON are sent as an empty object
            [AssistantMessage(parts=()), call("a", "{oops", complete=False), result("a")],
            [fc("a", "{}"), out("a")],
            id="bad-arguments",
        ),
    ],
)
def test_conversion_after_interruptions(
    history: list[Item], expected: list[dict[str, Any]]
) -> None:
    converted = convert_history(
        repair([UserMessage(text="go"), *history, UserMessage(text="next")])
    )
    assert converted == [user("go"), *expected, user("next")]
    assert_valid_input(converted)


# --- stream conversion of odd but legal events ---------------------------------------------------


async def convert(events: Iterable[Any]) -> list[StreamEvent] | ModelError:
    async def chunks() -> AsyncIterator[Any]:
        for event in events:
            yield event

    async with contextlib.aclosing(chunks()) as source:
        try:
            return [event async for event in translate_stream(source)]
        except ModelError as exc:
            return exc


COMPLETED = {"type": "response.completed", "response": {"usage": None}}


async def test_odd_but_legal_events() -> None:
    whole_call = {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f"}
    reasoning_done = {"type": "reasoning", "summary": [{"text": "a"}, {"text": "b"}]}
    only_at_the_end = {"type": "output_text", "text": "Only at the end."}
    events = [
        {"type": "response.queued"},  # unknown or uninteresting: ignored
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning"}},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {**reasoning_done, "encrypted_content": "E"},
        },
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {**whole_call, "arguments": '{"x"'},
        },
        {
            "type": "response.output_item.done",
            "output_index": 1,
            "item": {**whole_call, "arguments": '{"x": 1}'},
        },
        {"type": "response.output_item.added", "output_index": 2, "item": {"type": "message"}},
        {"type": "response.refusal.delta", "output_index": 2, "delta": "No."},
        {"type": "response.output_item.added", "output_index": 3, "item": {"type": "message"}},
        {
            "type": "response.output_item.done",
            "output_index": 3,
            "item": {"type": "message", "content": [only_at_the_end]},
        },
        COMPLETED,
        {"type": "response.output_text.delta", "delta": "after the end"},
    ]
    assert await convert(events) == [
        ReasoningStart(provider="openai-responses"),
        ReasoningDelta(text="a\n\nb"),
        ReasoningEnd(encrypted_content="E"),
        ToolCallStart(index=1, call_id="c1", name="f", provider_id="fc_1"),
        ToolCallDelta(index=1, arguments='{"x"'),
        ToolCallDelta(index=1, arguments=": 1}"),
        ToolCallEnd(index=1),
        TextDelta(text="No."),
        TextDelta(text="Only at the end."),
        StopReason(reason="tool_use"),
    ]


@pytest.mark.parametrize(
    ("terminal", "expected"),
    [
        ({"type": "response.completed", "response": {}}, StopReason(reason="end_turn")),
        (
            {
                "type": "response.incomplete",
                "response": {"incomplete_details": {"reason": "content_filter"}},
            },
            StopReason(reason="content_filter"),
        ),
        (
            {"type": "response.failed", "response": {"error": {"code": "server_error"}}},
            StreamError(
                message="openai-responses: the response failed (server_error)",
                code="server_error",
                retryable=True,
            ),
        ),
        (
            {"type": "error", "code": "invalid_prompt", "message": "Bad prompt."},
            StreamError(
                message="openai-responses: Bad prompt. (invalid_prompt)",
                code="invalid_prompt",
                retryable=False,
            ),
        ),
    ],
)
async def test_terminal_events(terminal: dict[str, Any], expected: StreamEvent) -> None:
    assert await convert([terminal]) == [expected]


async def test_malformed_and_truncated_streams_are_model_errors() -> None:
    truncated = await convert([{"type": "response.output_text.delta", "delta": "Hel"}])
    assert isinstance(truncated, ModelError)
    assert "ended before the response was complete" in str(truncated)
    for bad in ([42], [{"type": "response.output_text.delta", "delta": 7}], [{"no": "type"}]):
        error = await convert(bad)
        assert isinstance(error, ModelError)
        assert "malformed stream event" in str(error)


# --- every cassette through a real Worker ------------------------------------------------------


@pytest.mark.parametrize("name", cassette_names("openai-responses"))
async def test_cassette_replays_into_items(
    name: str, fake_server: FakeProviderServer, models: Callable[..., OpenAIResponsesModel]
) -> None:
    expected = expected_from_cassette(name)
    recorded_model = request_fixture(name)["model"]
    prompt = recorded_prompt(name)
    fake_server.enqueue(Reply.cassette(name), path=PATH)
    fake_server.set_default(DONE, path=PATH)
    worker = Worker(models(recorded_model), tools=TOOLS, system="Be brief.")

    outcome = await worker.run(prompt)
    assert outcome.status == "finished"
    message = next(i for i in outcome.items if isinstance(i, AssistantMessage))
    calls = [i for i in outcome.items if isinstance(i, ToolCall)]
    results = [i for i in outcome.items if isinstance(i, ToolResult)]
    assert not message.interrupted
    assert message.text == expected["text"]
    assert [p for p in message.parts if isinstance(p, ReasoningPart)] == [
        ReasoningPart(
            text="\n\n".join(s["text"] for s in item["summary"]),
            encrypted_content=item.get("encrypted_content"),
            provider_id=item["id"],
            provider="openai-responses",
        )
        for item in expected["reasoning"]
    ]
    usage = expected["usage"]
    assert message.usage == Usage(
        input_tokens=usage["input_tokens"],
        output_tokens=usage["output_tokens"],
        reasoning_tokens=usage["output_tokens_details"]["reasoning_tokens"],
        cache_read_tokens=usage["input_tokens_details"]["cached_tokens"],
    )
    if expected["incomplete"]:
        assert message.stop_reason == "max_tokens"
    else:
        assert message.stop_reason == ("tool_use" if calls else "end_turn")
    assert [(c.call_id, c.name, c.raw_arguments, c.provider_id) for c in calls] == [
        (c["call_id"], c["name"], c["arguments"], c["id"]) for c in expected["calls"]
    ]
    assert all(c.complete and c.parse_error is None for c in calls)
    assert [r.status for r in results] == ["ok"] * len(calls)

    requests = sent(fake_server)
    first = requests[0]
    assert first["model"] == recorded_model
    assert first["stream"] is True
    assert first["store"] is False
    assert first["instructions"] == "Be brief."
    assert first["input"] == [user(prompt)]
    assert first["tools"] == convert_tools(t.spec for t in TOOLS)
    assert ("include" in first) is is_reasoning_model(recorded_model)
    if calls:  # the worker answered the calls and asked again: the follow-up carries it all back
        assert outcome.output == "Carrying on."
        assert len(requests) == 2
        assert requests[1]["input"] == [
            user(prompt),
            *[
                reasoning_item(
                    "\n\n".join(s["text"] for s in item["summary"]),
                    item["encrypted_content"],
                    item["id"],
                )
                for item in expected["reasoning"]
                if item.get("encrypted_content")
            ],
            *[fc(c["call_id"], c["arguments"]) | {"name": c["name"]} for c in expected["calls"]],
            *[out(r.call_id, r.content) for r in results],
        ]
    else:
        assert outcome.output == expected["text"]
        assert len(requests) == 1

    # The next run sends everything back: valid, and reasoning only where it can be decrypted.
    await worker.run("And then?")
    follow_up = sent(fake_server)[-1]["input"]
    assert_valid_input(follow_up)
    carried = [i["id"] for i in follow_up if i.get("type") == "reasoning"]
    assert carried == [r["id"] for r in expected["reasoning"] if r.get("encrypted_content")]
    if expected["text"]:
        assert assistant(expected["text"]) in follow_up


async def test_encrypted_reasoning_cassette_is_carried_back_verbatim(
    fake_server: FakeProviderServer, models: Callable[..., OpenAIResponsesModel]
) -> None:
    """The blob sent back is the one from ``output_item.done``, not the earlier ``added`` one."""
    done = next(
        d["item"]
        for _, d in payloads(ENCRYPTED)
        if d["type"] == "response.output_item.done" and d["item"]["type"] == "reasoning"
    )
    fake_server.enqueue(Reply.cassette(ENCRYPTED), path=PATH)
    fake_server.set_default(DONE, path=PATH)
    await Worker(models(), tools=TOOLS).run("Calculate 100 * 200 / 3")
    reasoning = sent(fake_server)[1]["input"][1]
    assert reasoning == {
        "type": "reasoning",
        "id": done["id"],
        "summary": [],
        "encrypted_content": done["encrypted_content"],
    }


# --- faults -------------------------------------------------------------------------------------


async def test_429_with_retry_after_is_retried_after_the_header(
    fake_server: FakeProviderServer, models: Callable[..., OpenAIResponsesModel]
) -> None:
    fake_server.enqueue(Reply.error(429, retry_after=0.05), Reply.cassette(TEXT), path=PATH)
    worker = Worker(models())
    async with worker.stream("hi") as run:
        retries = [event async for event in run if isinstance(event, Retrying)]
    assert run.result.output == expected_from_cassette(TEXT)["text"]
    assert len(retries) == 1
    assert retries[0].attempt == 1
    assert retries[0].delay == pytest.approx(0.05)
    assert "429" in retries[0].error
    assert len(sent(fake_server)) == 2


async def test_500_is_retried_then_gives_up_and_the_worker_is_reusable(
    fake_server: FakeProviderServer, models: Callable[..., OpenAIResponsesModel]
) -> None:
    fake_server.enqueue(*[Reply.error(500)] * 3, path=PATH)
    worker = Worker(models())
    with pytest.raises(ModelError) as caught:
        await worker.run("hi")
    assert caught.value.status_code == 500
    assert caught.value.retryable
    assert isinstance(caught.value.partial.items[0], UserMessage)
    assert caught.value.partial.output == ""
    assert len(sent(fake_server)) == 3  # FAST_RETRY's three attempts, no more

    fake_server.enqueue(DONE, path=PATH)
    assert (await worker.run("again")).output == "Carrying on."
    assert_valid_input(sent(fake_server)[-1]["input"])


async def test_a_client_passed_in_never_retries_on_its_own(fake_server: FakeProviderServer) -> None:
    own = openai.AsyncOpenAI(api_key="k", base_url=fake_server.openai_base_url, max_retries=5)
    model = OpenAIResponsesModel("gpt-5", client=own, retry=RetryPolicy(max_attempts=2))
    fake_server.enqueue(*[Reply.error(503)] * 2, path=PATH)
    try:
        with pytest.raises(ModelError, match="503"):
            await Worker(model).run("hi")
    finally:
        await own.close()
    assert len(sent(fake_server)) == 2  # not 2 * 6


async def test_drop_before_headers_is_retried(
    fake_server: FakeProviderServer, models: Callable[..., OpenAIResponsesModel]
) -> None:
    fake_server.enqueue(Reply.responses_text(drop_before_headers=True), DONE, path=PATH)
    assert (await Worker(models()).run("hi")).output == "Carrying on."


async def test_drop_mid_stream_keeps_the_text_and_the_worker(
    fake_server: FakeProviderServer, models: Callable[..., OpenAIResponsesModel]
) -> None:
    events = payloads(TEXT)
    said = "".join(d["delta"] for _, d in events[:8] if d["type"] == "response.output_text.delta")
    assert said
    fake_server.enqueue(Reply.cassette(TEXT, drop_after=8), path=PATH)
    worker = Worker(models())
    with pytest.raises(ModelError) as caught:
        await worker.run("What is 4200 + 42?")
    partial = caught.value.partial.items[-1]
    assert isinstance(partial, AssistantMessage)
    assert partial.interrupted
    assert partial.text == said
    assert len(sent(fake_server)) == 1  # content had reached the caller: never re-generated

    fake_server.enqueue(DONE, path=PATH)
    assert (await worker.run("go on")).output == "Carrying on."
    follow_up = sent(fake_server)[-1]["input"]
    assert_valid_input(follow_up)
    assert follow_up[1] == assistant(said)
    assert "interrupted" in follow_up[2]["content"]


async def test_malformed_chunk_is_a_typed_error(
    fake_server: FakeProviderServer, models: Callable[..., OpenAIResponsesModel]
) -> None:
    fake_server.enqueue(Reply.cassette(TEXT, malformed_at=6), path=PATH)
    with pytest.raises(ModelError, match="JSONDecodeError") as caught:
        await Worker(models()).run("hi")
    partial = caught.value.partial.items[-1]
    assert isinstance(partial, AssistantMessage)
    assert partial.interrupted
    assert partial.text  # the deltas before the bad chunk are kept


def failing_stream(error_event: dict[str, Any]) -> Reply:
    """The real text stream up to its fifth delta, then ``error_event`` (no failure recorded)."""
    head = [d for _, d in payloads(TEXT)][:9]
    return Reply.sse([*head, error_event], named=True)


@pytest.mark.parametrize(
    ("error_event", "code", "retryable"),
    [
        (
            {
                "type": "response.failed",
                "sequence_number": 9,
                "response": {
                    "id": "resp_1",
                    "status": "failed",
                    "error": {"code": "server_error", "message": "The server had an error."},
                    "usage": None,
                },
            },
            "server_error",
            True,
        ),
        (
            {
                "type": "error",
                "sequence_number": 9,
                "code": "invalid_prompt",
                "message": "Invalid prompt.",
                "param": None,
            },
            "invalid_prompt",
            False,
        ),
        (  # the nested shape: its code is read from inside, and UIs see it too
            {
                "type": "error",
                "sequence_number": 9,
                "error": {"type": "server_error", "code": "rate_limit_exceeded", "message": "Slow"},
            },
            "rate_limit_exceeded",
            True,
        ),
    ],
)
async def test_failed_responses_and_error_events(
    error_event: dict[str, Any],
    code: str | None,
    retryable: bool,
    fake_server: FakeProviderServer,
    models: Callable[..., OpenAIResponsesModel],
) -> None:
    fake_server.enqueue(failing_stream(error_event), path=PATH)
    worker = Worker(models())
    errors: list[StreamError] = []
    async with worker.stream("hi") as run:
        errors.extend([e async for e in run if isinstance(e, StreamError)])
    error = run.error
    assert isinstance(error, ModelError)
    assert error.retryable is retryable
    assert [e.code for e in errors] == ([code] if code else [])  # UIs see the provider's error
    partial = error.partial.items[-1]
    assert isinstance(partial, AssistantMessage)
    assert partial.text == "4200 + 42 equals"[: len(partial.text)] != ""
    fake_server.enqueue(DONE, path=PATH)
    await worker.run("again")
    assert_valid_input(sent(fake_server)[-1]["input"])


async def test_stream_ending_without_its_terminal_event(
    fake_server: FakeProviderServer, models: Callable[..., OpenAIResponsesModel]
) -> None:
    head = [d for _, d in payloads(TEXT)][:9]
    fake_server.enqueue(Reply.sse(head, named=True), path=PATH)
    with pytest.raises(ModelError, match="ended before the response was complete") as caught:
        await Worker(models()).run("hi")
    assert caught.value.partial.output


async def test_idle_timeout_mid_stream(
    fake_server: FakeProviderServer, models: Callable[..., OpenAIResponsesModel]
) -> None:
    fake_server.enqueue(Reply.cassette(TEXT, stall_after=6), path=PATH)
    model = models(timeouts=Timeouts(connect=2.0, first_event=5.0, idle=0.2))
    started = time.monotonic()
    with pytest.raises(ModelError, match="idle timeout") as caught:
        await Worker(model).run("hi")
    assert time.monotonic() - started < 3.0
    assert caught.value.partial.output


# --- a follow-up request after each kind of interruption is valid -------------------------------


INTERRUPTIONS: dict[str, tuple[str, type, int, Any]] = {
    # kind: (cassette, trigger event, nth, tool for final_result)
    "mid-text": (TEXT, TextDelta, 2, final_result),
    "mid-reasoning-summary": (SUMMARY, ReasoningDelta, 3, final_result),
    "mid-reasoning-encrypted": (ENCRYPTED, ReasoningStart, 1, final_result),
    "mid-arguments": (PARALLEL, ToolCallDelta, 2, final_result),
    "mid-arguments-after-reasoning": (ENCRYPTED, ToolCallDelta, 2, final_result),
    "during-tool": (ENCRYPTED, ToolStarted, 1, slow_final_result),
}


@pytest.mark.parametrize("kind", [*INTERRUPTIONS, "model-error"])
async def test_follow_up_after_interruption_is_valid(
    kind: str, fake_server: FakeProviderServer, models: Callable[..., OpenAIResponsesModel]
) -> None:
    fake_server.set_default(DONE, path=PATH)
    if kind == "model-error":
        fake_server.enqueue(Reply.cassette(PARALLEL, drop_after=9), path=PATH)
        worker = Worker(models(), tools=TOOLS)
        with pytest.raises(ModelError):
            await worker.run("go")
    else:
        name, trigger, nth, final = INTERRUPTIONS[kind]
        fake_server.enqueue(Reply.cassette(name, pace=0.005), path=PATH)
        worker = Worker(models(), tools=[final, secret_retrieval_tool])
        cancelled = await cancel_at(worker, "go", trigger, nth)
        assert cancelled.reason == "user pressed stop"

    history = worker.history
    message = next(i for i in history if isinstance(i, AssistantMessage))
    assert message.interrupted is (kind != "during-tool")  # a tool runs after the stream ended
    await worker.run("next")
    follow_up = sent(fake_server)[-1]["input"]
    assert_valid_input(follow_up)
    assert follow_up[0] == user("go")
    assert follow_up[-1] == user("next")
    assert "interrupted" in follow_up[-2]["content"]  # the Note, sent as a user message
    middle = follow_up[1:-2]
    kinds = [i.get("type") or i["role"] for i in middle]

    if kind == "mid-text":
        assert kinds == ["assistant"]
        assert middle[0] == assistant(message.text)
        assert expected_from_cassette(TEXT)["text"].startswith(message.text)
    elif kind.startswith("mid-reasoning"):
        assert message.reasoning or kind.endswith("encrypted")  # kept in history ...
        assert kinds == []  # ... but never sent: it has no encrypted content to send
    elif kind.startswith("mid-arguments") or kind == "model-error":
        assert "reasoning" not in kinds  # its call was cut off, so its reasoning cannot go back
        cut = [i for i in history if isinstance(i, ToolCall) and not i.complete]
        assert cut, "a call whose arguments were cut off is kept, marked incomplete"
        assert {"type": "function_call", "call_id": cut[0].call_id, "name": cut[0].name,
                "arguments": "{}"} in middle  # fmt: skip
    else:  # during-tool: the call was whole, so its reasoning goes back with it
        assert kinds == ["reasoning", "function_call", "function_call_output"]
        assert middle[0]["encrypted_content"]
        assert middle[2]["output"].startswith("gave up reporting 6666")


# --- the cancellation sweep ---------------------------------------------------------------------


class _PacedBody(httpx2.AsyncByteStream):
    """A response body delivered part by part, one scheduler checkpoint before each part."""

    def __init__(self, parts: Sequence[bytes], closed: set[int]) -> None:
        self._parts = parts
        self._closed = closed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            await anyio.lowlevel.checkpoint()
            yield part

    async def aclose(self) -> None:
        self._closed.add(id(self))


class PacedReplay:
    """An in-process transport that replays a cassette event by event for the first request of
    ``prompt``, and a short text for every other request; it counts the bodies left open."""

    def __init__(self, cassette: str, prompt: str) -> None:
        self.prompt = prompt
        self.cassette = split_sse((CASSETTES / f"{cassette}.sse").read_bytes())
        self.text = list(DONE.events)
        self.opened: list[int] = []
        self.closed: set[int] = set()

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        last = body["input"][-1]
        first_turn = last.get("role") == "user" and last["content"] == self.prompt
        stream = _PacedBody(self.cassette if first_turn else self.text, self.closed)
        self.opened.append(id(stream))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    def model(self) -> OpenAIResponsesModel:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(self.handler))
        client = openai.AsyncOpenAI(
            api_key="k", base_url="http://fake.invalid/v1", http_client=http, max_retries=0
        )
        return OpenAIResponsesModel("gpt-5", client=client)

    @property
    def left_open(self) -> int:
        return len(set(self.opened) - self.closed)


def split_sse(body: bytes) -> list[bytes]:
    return [part + b"\n\n" for part in body.split(b"\n\n") if part.strip()]


def check_next_request(worker: Worker, outcome: RunResult | BaseException) -> None:
    """After any cancellation, the request the worker would send next is valid."""
    assert_valid_input(convert_history([*worker.history, UserMessage(text="next")]))


def where_cut(history: Sequence[Item]) -> set[str]:
    """Which kinds of interruption a history shows (to prove the sweep reached them all)."""
    kinds: set[str] = set()
    for item in history:
        if isinstance(item, AssistantMessage) and item.interrupted:
            for part in item.parts:
                if isinstance(part, ReasoningPart) and not part.encrypted_content:
                    kinds.add("mid-reasoning")
                elif isinstance(part, TextPart):
                    kinds.add("mid-text")
        elif isinstance(item, ToolCall) and not item.complete and item.raw_arguments:
            kinds.add("mid-arguments")
        elif isinstance(item, ToolResult) and item.status != "ok":
            kinds.add("around-the-tool")
    return kinds


async def test_cancellation_sweep_over_a_paced_function_call_replay() -> None:
    """Every checkpoint of a run that reasons, calls a tool and answers, cancelled in turn.

    The cassette arrives one SSE event per read, each read a scheduler checkpoint, so the sweep
    cancels between every two events as well as while opening, running the tool and closing.
    """
    prompt = "Calculate 100 * 200 / 3"
    replay = PacedReplay(ENCRYPTED, prompt)
    model = replay.model()
    try:
        warm = await Worker(model, tools=TOOLS).run(prompt)  # the SDK's first-call set-up
        assert warm.output == "Carrying on."
        started = time.monotonic()
        reached: set[str] = set()

        def check(worker: Worker, outcome: RunResult | BaseException) -> None:
            check_next_request(worker, outcome)
            reached.update(where_cut(worker.history))

        report = await cancellation_sweep(
            lambda: Worker(model, tools=TOOLS), prompt, run_timeout=10.0, check=check
        )
        elapsed = time.monotonic() - started
    finally:
        await model.client.close()
    print(
        f"\nsweep({ENCRYPTED}, paced in-process): {report.checkpoints} checkpoints, "
        f"{report.runs} runs, {report.cancelled} cancelled, {report.completed} completed, "
        f"{elapsed:.2f}s"
    )
    report.raise_for_violations()
    assert report.cancelled > 0
    assert report.cancelled + report.completed == report.runs  # every run ended, none hung
    # trio shuffles the tasks it wakes together, so a single tick may land on either side of a
    # short block; the sweep as a whole must still reach nearly every kind of place.
    every_place = {"mid-reasoning", "mid-arguments", "around-the-tool", "mid-text"}
    assert reached <= every_place
    assert len(reached) >= 3
    assert len(replay.opened) > report.runs  # requests were in flight when cancelled ...
    assert replay.left_open == 0  # ... and every response body was closed


async def test_cancellation_sweep_over_real_http(
    fake_server: FakeProviderServer, models: Callable[..., OpenAIResponsesModel]
) -> None:
    """The same scenario against the server: cancels land while connecting, sending, reading.

    Over a socket the sweep's tick counter spins while the run waits for bytes, so its count
    depends on timing; it is capped to keep the test fast (the in-process sweep is exhaustive).
    """
    prompt = "Calculate 100 * 200 / 3"
    fake_server.set_default(DONE, path=PATH)
    model = models()

    def make_worker() -> Worker:
        # One function-call reply per worker; whatever else is asked gets the default text.
        fake_server.script([Reply.cassette(ENCRYPTED)], path=PATH)
        return Worker(model, tools=TOOLS)

    await make_worker().run(prompt)  # warm up: the SDK's first-call set-up, a pooled connection
    started = time.monotonic()
    report = await cancellation_sweep(
        make_worker, prompt, run_timeout=10.0, max_checkpoints=150, check=check_next_request
    )
    elapsed = time.monotonic() - started
    stats = fake_server.stats
    print(
        f"\nsweep({ENCRYPTED}, real HTTP): {report.checkpoints} checkpoints, {report.runs} runs, "
        f"{report.cancelled} cancelled, {report.completed} completed, {elapsed:.2f}s; server: "
        f"{stats.requests} requests, {stats.disconnects_mid_stream} mid-stream disconnects"
    )
    report.raise_for_violations()
    assert report.runs > 1
    for body in sent(fake_server):  # every request that went out, after any cancel, was valid
        assert_valid_input(body["input"])
    await model.aclose()
    stats = await fake_server.wait_for_async(lambda s: s.active_connections == 0)
    assert stats.connections_opened == stats.connections_closed  # nothing leaked


# --- parser robustness --------------------------------------------------------------------------


def split(body: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(body)) for c in cuts})
    edges = [0, *points, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges) if b > a]


class _Chunks(httpx2.AsyncByteStream):
    def __init__(self, parts: Sequence[bytes]) -> None:
        self._parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            yield part


def in_process_model(*bodies: Sequence[bytes]) -> OpenAIResponsesModel:
    """A model whose n-th request gets ``bodies[n]`` (split as given); later ones get text."""
    queue = list(bodies)

    def handler(request: httpx2.Request) -> httpx2.Response:
        parts = queue.pop(0) if queue else list(DONE.events)
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Chunks(parts)
        )

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    client = openai.AsyncOpenAI(
        api_key="k", base_url="http://fake.invalid/v1", http_client=http, max_retries=0
    )
    return OpenAIResponsesModel("gpt-5", client=client, retry=RetryPolicy(max_attempts=1))


async def stream_events(parts: Sequence[bytes]) -> list[StreamEvent] | ModelError:
    """The events the model yields for a body delivered in ``parts`` (no network)."""
    model = in_process_model(parts)
    try:
        async with model.stream(ModelRequest(history=(UserMessage(text="hi"),))) as stream:
            return [event async for event in stream]
    except ModelError as exc:
        return exc
    finally:
        await model.client.close()


BODIES = {name: (CASSETTES / f"{name}.sse").read_bytes() for name in [TEXT, ENCRYPTED, PARALLEL]}
WHOLE: dict[str, list[StreamEvent]] = {}


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(sorted(BODIES)),
    cuts=st.lists(st.integers(min_value=0, max_value=12_000), max_size=40),
)
async def test_any_split_of_a_real_stream_gives_the_same_events(name: str, cuts: list[int]) -> None:
    body = BODIES[name]
    if name not in WHOLE:
        whole = await stream_events([body])
        assert isinstance(whole, list)
        WHOLE[name] = whole
    assert await stream_events(split(body, cuts)) == WHOLE[name]


async def test_byte_by_byte_split_of_a_real_stream() -> None:
    body = BODIES[PARALLEL]
    whole = await stream_events([body])
    assert isinstance(whole, list)
    assert sum(isinstance(e, ToolCallEnd) for e in whole) == 2
    assert await stream_events([body[i : i + 1] for i in range(len(body))]) == whole


SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | st.text(max_size=4)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
EVENT_TYPES = sorted({d["type"] for name in BODIES for _, d in payloads(name)} | {
    "response.failed", "error", "response.refusal.delta", "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta", "response.reasoning_summary_part.added"})  # fmt: skip
ITEM = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "reasoning", "web_search_call"]) | JSON},
    optional={
        key: st.text(max_size=6) | JSON
        for key in ("id", "call_id", "name", "arguments", "encrypted_content")
    }
    | {"summary": st.lists(st.fixed_dictionaries({"text": st.text(max_size=5) | JSON}))},
)
EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(EVENT_TYPES)},
    optional={
        "delta": st.text(max_size=6) | JSON,
        "output_index": st.integers(0, 2) | JSON,
        "item": ITEM | JSON,
        "response": st.fixed_dictionaries(
            {}, optional={"usage": JSON, "error": JSON, "incomplete_details": JSON}
        )
        | JSON,
        "code": JSON,
        "error": JSON,
    },
)


def sse(events: Iterable[Any]) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    garbage=st.one_of(
        st.binary(max_size=300),
        st.lists(
            st.sampled_from([b"data: ", b"event: x\n", b"\n", b"\n\n", b"{", b"}", b'"type":'])
            | st.text(max_size=12).map(str.encode),
            max_size=30,
        ).map(b"".join),
        st.lists(EVENT, min_size=1, max_size=12).map(sse),
        st.lists(JSON, max_size=4).map(sse),
    )
)
async def test_garbage_gives_a_typed_error_never_a_crash(garbage: bytes) -> None:
    """Through a whole Worker: a run ends with a result or a `ModelError`, nothing else."""
    model = in_process_model([garbage])
    worker = Worker(model, tools=TOOLS, max_turns=3)
    try:
        with anyio.fail_after(10):
            await worker.run("hi")
    except ModelError:
        pass
    finally:
        await model.client.close()
    assert not worker.running


def test_split_helper() -> None:
    assert split(b"abcdef", [2, 2, 4, 99]) == [b"ab", b"cd", b"ef"]
    assert b"".join(split_sse(BODIES[TEXT])) == BODIES[TEXT]
