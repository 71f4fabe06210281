"""OpenAIChatModel over real HTTP (FakeProviderServer on 127.0.0.1) through the official SDK.

Expectations are computed from the cassette files themselves (see ``conftest.sse_payloads``), so
a converter that dropped or invented content cannot pass. Every request the worker sends after an
interruption is checked against the Chat Completions ordering rules (`assert_valid_messages`).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import httpx2
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_worker import Cancelled, ModelError, Worker, tool
from llm_worker.events import (
    Retrying,
    StopReason,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolStarted,
    UsageUpdate,
)
from llm_worker.history import MISSING_RESULT, repair
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
from llm_worker.models.openai_chat import (
    OpenAIChatModel,
    StreamTranslation,
    convert_history,
    convert_tools,
)
from llm_worker.testing import FakeProviderServer, Reply, cancellation_sweep
from llm_worker.tools import ToolContext, ToolSpec

from .conftest import CASSETTES, SDK_GENERATOR_WARNINGS, cassette_names, request_fixture
from .conftest import sse_payloads as payloads

pytestmark = [pytest.mark.anyio, SDK_GENERATOR_WARNINGS]

CHAT = "/v1/chat/completions"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=1.0)


# --- tools whose names match the recorded tool calls ----------------------------------------------


@tool
async def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
async def secret_retrieval_tool(password: str) -> str:
    """Look up the secret for a password."""
    return f"secret-of-{password}"


@tool
async def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@tool
async def get_product_name() -> str:
    """The product's name."""
    return "llm-worker"


TOOLS = [multiply, secret_retrieval_tool, get_weather, get_product_name]


# --- helpers ------------------------------------------------------------------------------------


def expected_from_cassette(name: str) -> dict[str, Any]:
    """Text, tool calls, finish reason and usage, read straight from the cassette's JSON."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finish = None
    usage = None
    error = None
    for event, data in payloads(name):
        if event == "error" or "error" in data:
            error = data["error"]
            break
        if data.get("usage"):
            usage = data["usage"]
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            text.append(delta.get("content") or "")
            text.append(delta.get("refusal") or "")
            reasoning.append(delta.get("reasoning") or "")
            for call in delta.get("tool_calls") or []:
                entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                entry["id"] = entry["id"] or call.get("id") or ""
                function = call.get("function") or {}
                entry["name"] = entry["name"] or function.get("name") or ""
                entry["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    return {
        "text": "".join(text),
        "reasoning": "".join(reasoning),
        "calls": [calls[i] for i in sorted(calls)],
        "finish": finish,
        "usage": usage,
        "error": error,
        "refusal": any(
            d.get("choices") and d["choices"][0]["delta"].get("refusal") for _, d in payloads(name)
        ),
    }


def assert_valid_messages(messages: Sequence[dict[str, Any]]) -> None:
    """The Chat Completions rules a follow-up request must satisfy after any interruption."""
    pending: list[str] = []
    for position, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            assert message["tool_call_id"] in pending, f"message {position}: orphan tool result"
            pending.remove(message["tool_call_id"])
            continue
        assert not pending, f"message {position} ({role}) before the results of {pending}"
        if role == "assistant":
            assert message.get("content") or message.get("tool_calls"), (
                f"message {position}: an assistant message with neither content nor tool calls"
            )
            for call in message.get("tool_calls") or []:
                json.loads(call["function"]["arguments"])  # the API wants JSON arguments
                pending.append(call["id"])
    assert not pending, f"unanswered tool calls at the end: {pending}"
    assert messages[-1]["role"] == "user", "the request must end with the new input"


def chat_requests(server: FakeProviderServer) -> list[dict[str, Any]]:
    return [r.json for r in server.requests if r.path == CHAT]


@pytest.fixture
async def model(fake_server: FakeProviderServer) -> AsyncIterator[OpenAIChatModel]:
    chat = OpenAIChatModel(
        "gpt-4o-mini",
        base_url=fake_server.openai_base_url,
        api_key="test-key",
        retry=FAST_RETRY,
    )
    yield chat
    await chat.aclose()


def make_model(server: FakeProviderServer, **kwargs: Any) -> OpenAIChatModel:
    kwargs.setdefault("retry", FAST_RETRY)
    return OpenAIChatModel(
        "gpt-4o-mini", base_url=server.openai_base_url, api_key="test-key", **kwargs
    )


# --- construction -------------------------------------------------------------------------------


def test_missing_key_is_reported_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingCredentials, match="OPENAI_API_KEY is not set"):
        OpenAIChatModel("gpt-4o-mini")
    with pytest.raises(MissingCredentials):
        resolve_model("openai:gpt-4o-mini")


async def test_client_settings_and_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://example.invalid/v1")
    timeouts = Timeouts(connect=1.5, first_event=9.0, idle=4.0)
    chat = OpenAIChatModel("gpt-4o-mini", timeouts=timeouts)
    assert chat.name == "openai:gpt-4o-mini"
    assert chat.client.api_key == "sk-env"
    assert str(chat.client.base_url).startswith("http://example.invalid/v1")
    assert chat.client.max_retries == 0  # our retries run instead
    assert chat.client.timeout == timeouts.for_httpx()
    await chat.aclose()

    ollama = resolve_model("ollama:llama3.1")
    assert isinstance(ollama, OpenAIChatModel)
    assert ollama.name == "ollama:llama3.1"
    assert str(ollama.client.base_url).startswith("http://localhost:11434/v1")
    assert ollama.client.api_key == "ollama"
    await ollama.aclose()

    own = openai.AsyncOpenAI(api_key="mine", max_retries=5)
    wrapped = OpenAIChatModel("m", client=own, provider="vllm")
    assert wrapped.client is own
    assert wrapped.client.max_retries == 5  # a client you pass is used as it is
    assert wrapped.name == "vllm:m"
    await wrapped.aclose()
    assert not own.is_closed()  # and stays yours to close
    await own.close()


def test_request_params() -> None:
    chat = OpenAIChatModel("gpt-4o", api_key="k", extra_body={"top_k": 5})
    spec = ToolSpec("lookup", "Find it.", {"type": "object", "properties": {}}, strict=True)
    plain = ToolSpec("plain", "Plain.", {"type": "object", "properties": {}})
    request = ModelRequest(
        history=(UserMessage(text="hi"),),
        system="Be brief.",
        tools=(spec, plain),
        settings=ModelSettings(max_tokens=50, temperature=0.2),
    )
    params = chat.request_params(request)
    assert params["model"] == "gpt-4o"
    assert params["stream"] is True
    assert params["stream_options"] == {"include_usage": True}
    assert params["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert params["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Find it.",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "plain",
                "description": "Plain.",
                "parameters": {"type": "object", "properties": {}},
            },
        },
    ]
    assert params["max_tokens"] == 50
    assert params["temperature"] == 0.2
    assert params["top_k"] == 5  # extra_body is merged into the body, as the SDK does
    bare = chat.request_params(ModelRequest(history=()))
    assert "tools" not in bare
    assert "max_tokens" not in bare
    assert "temperature" not in bare
    assert convert_tools([]) == []


# --- history conversion -------------------------------------------------------------------------


def call(call_id: str, name: str = "f", raw: str = '{"x": 1}', **kw: Any) -> ToolCall:
    arguments = kw.pop("arguments", None)
    if arguments is None and kw.get("complete", True):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        arguments = parsed if isinstance(parsed, dict) else None
    return ToolCall(call_id=call_id, name=name, raw_arguments=raw, arguments=arguments, **kw)


def result(call_id: str, content: str = "ok", name: str = "f") -> ToolResult:
    return ToolResult(call_id=call_id, name=name, content=content)


def test_assistant_message_and_its_calls_become_one_message() -> None:
    history: list[Item] = [
        UserMessage(text="go"),
        AssistantMessage(parts=(ReasoningPart(text="hmm"), TextPart(text="Let me look."))),
        call("a", raw='{"q": "x"}'),
        call("b", raw="{}"),
        result("b", "B"),
        result("a", "A"),
        AssistantMessage(parts=(TextPart(text="Done."),)),
    ]
    assert convert_history(history, "sys") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "Let me look.",  # reasoning is not sent
            "tool_calls": [
                {
                    "id": "a",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"q": "x"}'},
                },
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "b", "content": "B"},
        {"role": "tool", "tool_call_id": "a", "content": "A"},
        {"role": "assistant", "content": "Done."},
    ]


def test_interruptions_convert_to_valid_messages() -> None:
    history: list[Item] = [
        UserMessage(text="one"),
        # cut off mid-text: sent as what was said
        AssistantMessage(parts=(TextPart(text="The answ"),), interrupted=True),
        Note(kind="interrupted", text="[interrupted]"),
        UserMessage(text="two"),
        # cut off before anything was said: left out
        AssistantMessage(parts=(), interrupted=True),
        Note(kind="interrupted", text="[interrupted again]"),
        UserMessage(text="three"),
        # reasoning only (Groq): nothing the API can take, left out
        AssistantMessage(parts=(ReasoningPart(text="thinking"),), interrupted=True),
        # tool-only turn, arguments cut off, then a synthetic result
        call("c1", raw='{"x": ', complete=False),
        ToolResult(call_id="c1", name="f", content="Not executed.", status="cancelled"),
        UserMessage(text="four"),
    ]
    messages = convert_history(repair(history))
    assert messages == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "The answ"},
        {"role": "user", "content": "[interrupted]"},
        {"role": "user", "content": "two"},
        {"role": "user", "content": "[interrupted again]"},
        {"role": "user", "content": "three"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Not executed."},
        {"role": "user", "content": "four"},
    ]
    assert_valid_messages(messages)


def test_broken_histories_are_repaired_not_sent() -> None:
    history: list[Item] = [
        UserMessage(text="x"),
        result("ghost"),  # a result for no call: dropped
        call("a", raw="[1, 2]"),  # JSON but not an object: "{}"
        UserMessage(text="y"),  # "a" was never answered: a synthetic tool message comes first
        call("b"),
        result("b"),
        call("c"),  # a call after the results: a new assistant message
        result("c"),
        result("c"),  # a second answer: dropped
        UserMessage(text="z"),
    ]
    messages = convert_history(repair(history))
    assert_valid_messages(messages)
    assert [m["role"] for m in messages] == [
        "user",
        "assistant",
        "tool",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "user",
    ]
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert messages[2]["content"] == MISSING_RESULT


@pytest.mark.parametrize(
    "name",
    [
        "openai-chat/text-include-usage",
        "openai-chat/parallel-tool-calls-mixed-args",
        "openai-chat/parallel-tool-calls",
        "openai-chat/tool-call-fragmented",
        "openai-chat/text-no-usage",
    ],
)
def test_history_reproduces_recorded_requests(name: str) -> None:
    """The messages real clients sent to the real API, rebuilt from the equivalent history."""
    recorded = request_fixture(name)["messages"]
    system = None
    history: list[Item] = []
    for message in recorded:
        role = message["role"]
        if role == "system":
            system = message["content"]
        elif role == "user":
            history.append(UserMessage(text=message["content"]))
        elif role == "assistant":
            if message.get("content"):
                history.append(AssistantMessage(parts=(TextPart(text=message["content"]),)))
            for tc in message.get("tool_calls") or []:
                raw = tc["function"]["arguments"]
                history.append(call(tc["id"], tc["function"]["name"], raw))
        elif role == "tool":
            history.append(result(message["tool_call_id"], message["content"]))
    normalise = lambda ms: [{k: v for k, v in m.items() if v is not None} for m in ms]  # noqa: E731
    assert normalise(convert_history(history, system)) == normalise(recorded)


# --- stream conversion (no network) -------------------------------------------------------------


def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


def test_converter_handles_odd_but_legal_chunks() -> None:
    converter = StreamTranslation()
    feed = lambda data: list(converter.feed(data))  # noqa: E731
    assert feed({"choices": []}) == []
    assert feed({"choices": [choice({"role": "assistant", "content": ""})], "x_vendor": 1}) == []
    # an id first, the name later (some servers), arguments in between
    assert feed({"choices": [choice({"tool_calls": [{"index": 0, "id": "call_1"}]})]}) == []
    assert (
        feed(
            {"choices": [choice({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]})]}
        )
        == []
    )
    assert feed(
        {"choices": [choice({"tool_calls": [{"index": 0, "function": {"name": "f"}}]})]}
    ) == [
        ToolCallStart(index=0, call_id="call_1", name="f"),
        ToolCallDelta(index=0, arguments='{"a"'),
    ]
    # a lax server with no index: a new id is a new call, no id continues the latest call
    events = feed(
        {"choices": [choice({"tool_calls": [{"id": "call_2", "function": {"name": "g"}}]})]}
    )
    assert events == [ToolCallStart(index=1, call_id="call_2", name="g")]
    events = feed({"choices": [choice({"tool_calls": [{"function": {"arguments": "{}"}}]})]})
    assert events == [ToolCallDelta(index=1, arguments="{}")]
    # no id at all: one is made up, unique
    lax = StreamTranslation()
    data = {"choices": [choice({"tool_calls": [{"function": {"name": "h", "arguments": "{}"}}]})]}
    [start, _] = lax.feed(data)
    assert isinstance(start, ToolCallStart)
    assert start.index == 0
    assert start.call_id == ""  # no id given: the timeline gives it one
    # reasoning from compatible servers (vLLM "reasoning_content", Groq/OpenRouter "reasoning")
    assert [type(e).__name__ for e in feed({"choices": [choice({"reasoning_content": "r"})]})] == [
        "ReasoningDelta"
    ]
    # finish: every open call ends, then the stop reason
    events = feed({"choices": [choice({}, "tool_calls")]})
    assert [type(e) for e in events[:-1]] == [ToolCallEnd] * (len(events) - 1)
    assert events[-1] == StopReason(reason="tool_use")
    # cumulative usage on several chunks is reported as increments
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    assert feed({"choices": [], "usage": usage}) == [
        UsageUpdate(usage=Usage(input_tokens=10, output_tokens=2))
    ]
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    assert feed({"choices": [], "usage": usage}) == [
        UsageUpdate(
            usage=Usage(output_tokens=3, reasoning_tokens=3, cache_read_tokens=4)
        )  # the input count did not change: the increment says nothing about it
    ]


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "end_turn"),
        ("tool_calls", "tool_use"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("something_new", "something_new"),
    ],
)
def test_finish_reasons(finish: str, reason: str) -> None:
    events = StreamTranslation().feed({"choices": [choice({"content": "x"}, finish)]})
    assert list(events) == [TextDelta(text="x"), StopReason(reason=reason)]


# --- every cassette through a real Worker over HTTP ---------------------------------------------


@pytest.mark.parametrize("name", [*cassette_names("openai-chat"), *cassette_names("groq")])
async def test_cassette_replays_into_items(
    name: str, fake_server: FakeProviderServer, model: OpenAIChatModel
) -> None:
    expected = expected_from_cassette(name)
    fake_server.enqueue(Reply.cassette(name), path=CHAT)
    fake_server.enqueue(Reply.openai_text(["All ", "done."]), path=CHAT)
    worker = Worker(model, tools=TOOLS, system="Be brief.")

    if expected["error"] is not None:  # groq: an error event after 93 reasoning chunks
        with pytest.raises(ModelError, match="mid-stream") as caught:
            await worker.run("Call the tool.")
        partial = [i for i in caught.value.partial.items if isinstance(i, AssistantMessage)]
        assert len(partial) == 1
        assert partial[0].interrupted
        assert partial[0].reasoning == expected["reasoning"] != ""
        assert caught.value.retryable is False
        assert len(chat_requests(fake_server)) == 1  # never retried once content streamed
        # the worker is reusable and the next request is valid
        result = await worker.run("Again.")
        assert result.output == "All done."
        assert_valid_messages(chat_requests(fake_server)[-1]["messages"])
        return

    result = await worker.run("Go.")
    assert result.status == "finished"
    messages = [i for i in result.items if isinstance(i, AssistantMessage)]
    calls = [i for i in result.items if isinstance(i, ToolCall)]
    results = [i for i in result.items if isinstance(i, ToolResult)]
    first = messages[0]
    assert first.text == expected["text"]
    assert not first.interrupted
    reasons = {"stop": "end_turn", "tool_calls": "tool_use"}
    assert first.stop_reason == ("refusal" if expected["refusal"] else reasons[expected["finish"]])
    if expected["usage"]:
        usage = expected["usage"]
        assert first.usage == Usage(
            input_tokens=usage["prompt_tokens"],
            output_tokens=usage["completion_tokens"],
            reasoning_tokens=usage["completion_tokens_details"]["reasoning_tokens"],
            cache_read_tokens=usage["prompt_tokens_details"]["cached_tokens"],
        )
    else:  # the server reported none: unknown, not zero
        assert first.usage == Usage(input_tokens=None, output_tokens=None)
    assert [(c.call_id, c.name, c.raw_arguments) for c in calls] == [
        (c["id"], c["name"], c["arguments"]) for c in expected["calls"]
    ]
    assert all(c.complete and c.parse_error is None for c in calls)
    assert sorted(r.call_id for r in results) == sorted(c.call_id for c in calls)  # any order
    assert all(r.status == "ok" for r in results)

    sent = chat_requests(fake_server)
    assert sent[0]["stream"] is True
    assert sent[0]["stream_options"] == {"include_usage": True}
    assert sent[0]["model"] == "gpt-4o-mini"
    assert sent[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Go."},
    ]
    assert {t["function"]["name"] for t in sent[0]["tools"]} == {t.name for t in TOOLS}
    if not calls:
        assert len(sent) == 1
        assert result.output == expected["text"]
        return
    assert len(sent) == 2
    assert result.output == "All done."
    follow_up = sent[1]["messages"]
    assert follow_up[2] == {
        "role": "assistant",
        "content": expected["text"] or None,
        "tool_calls": [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in expected["calls"]
        ],
    }
    assert follow_up[3:] == [
        {"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in results
    ]
    assert [m["role"] for m in follow_up] == ["system", "user", "assistant"] + ["tool"] * len(calls)


# --- faults -------------------------------------------------------------------------------------


async def test_429_with_retry_after_is_retried_after_the_header(
    fake_server: FakeProviderServer, model: OpenAIChatModel
) -> None:
    fake_server.enqueue(
        Reply.error(429, retry_after=0.3), Reply.cassette("openai-chat/text-no-usage"), path=CHAT
    )
    worker = Worker(model)
    seen: list[Any] = []
    started = time.monotonic()
    async with worker.stream("hi") as run:
        async for event in run:
            if isinstance(event, Retrying):  # told before the wait: no retry was sent yet
                seen.append((event, len(fake_server.requests)))
    assert run.result.output == "Hello! How can I assist you today?"
    [(retrying, requests_when_told)] = seen
    assert requests_when_told == 1
    assert retrying.attempt == 1
    assert retrying.delay == pytest.approx(0.3)  # the header wins over the back-off
    assert "429" in retrying.error
    requests = fake_server.requests
    assert len(requests) == 2
    assert time.monotonic() - started >= 0.3


async def test_500_is_retried_then_gives_up(
    fake_server: FakeProviderServer, model: OpenAIChatModel
) -> None:
    fake_server.enqueue(Reply.error(500), Reply.cassette("openai-chat/text-no-usage"), path=CHAT)
    worker = Worker(model)
    assert (await worker.run("hi")).output.startswith("Hello!")
    fake_server.enqueue(*[Reply.error(503)] * FAST_RETRY.max_attempts, path=CHAT)
    with pytest.raises(ModelError, match="HTTP 503") as caught:
        await worker.run("again")
    assert caught.value.status_code == 503
    assert caught.value.retryable
    fake_server.enqueue(Reply.error(400, message="bad request"), path=CHAT)
    requests_before = len(fake_server.requests)
    with pytest.raises(ModelError, match="HTTP 400"):
        await worker.run("bad")
    assert len(fake_server.requests) == requests_before + 1  # a 400 is not retried
    fake_server.enqueue(Reply.cassette("openai-chat/text-no-usage"), path=CHAT)
    assert (await worker.run("fine")).output.startswith("Hello!")


async def test_drop_before_headers_is_retried(
    fake_server: FakeProviderServer, model: OpenAIChatModel
) -> None:
    fake_server.enqueue(
        Reply.openai_text("lost", drop_before_headers=True),
        Reply.cassette("openai-chat/text-include-usage"),
        path=CHAT,
    )
    worker = Worker(model)
    retries: list[Retrying] = []
    async with worker.stream("hi") as run:
        async for event in run:
            if isinstance(event, Retrying):
                retries.append(event)
    assert run.result.output == "The capital of the UK is London."
    assert len(retries) == 1
    assert "could not be reached" in retries[0].error


async def test_drop_mid_stream_keeps_the_text_and_the_worker(
    fake_server: FakeProviderServer, model: OpenAIChatModel
) -> None:
    fake_server.enqueue(Reply.cassette("openai-chat/text-include-usage", drop_after=4), path=CHAT)
    worker = Worker(model)
    with pytest.raises(ModelError) as caught:
        await worker.run("capital?")
    assert len(fake_server.requests) == 1  # content had streamed: no silent re-generation
    [message] = [i for i in caught.value.partial.items if isinstance(i, AssistantMessage)]
    assert message.interrupted
    assert message.text == "The capital of"
    assert worker.history[-1] == message

    fake_server.enqueue(Reply.openai_text("Again: London."), path=CHAT)
    assert (await worker.run("and?")).output == "Again: London."
    messages = chat_requests(fake_server)[-1]["messages"]
    assert_valid_messages(messages)
    assert {"role": "assistant", "content": "The capital of"} in messages
    assert any("interrupted" in m["content"] for m in messages if m["role"] == "user")


async def test_malformed_chunk_is_a_typed_error(
    fake_server: FakeProviderServer, model: OpenAIChatModel
) -> None:
    fake_server.enqueue(Reply.cassette("openai-chat/text-no-usage", malformed_at=3), path=CHAT)
    worker = Worker(model)
    with pytest.raises(ModelError, match="JSONDecodeError") as caught:
        await worker.run("hi")
    [message] = [i for i in caught.value.partial.items if isinstance(i, AssistantMessage)]
    assert message.text == "Hello!"
    fake_server.enqueue(Reply.openai_text("ok"), path=CHAT)
    assert (await worker.run("again")).output == "ok"


async def test_malformed_first_chunk_is_not_retried(
    fake_server: FakeProviderServer, model: OpenAIChatModel
) -> None:
    fake_server.enqueue(Reply.sse([{"choices": "not a list"}, "[DONE]"]), path=CHAT)
    worker = Worker(model)
    with pytest.raises(ModelError, match="openai"):
        await worker.run("hi")
    assert len(fake_server.requests) == 1


async def test_idle_timeout_mid_stream(fake_server: FakeProviderServer) -> None:
    model = make_model(fake_server, timeouts=Timeouts(idle=0.2))
    try:
        fake_server.enqueue(Reply.cassette("openai-chat/text-no-usage", stall_after=3), path=CHAT)
        worker = Worker(model)
        started = time.monotonic()
        with pytest.raises(ModelError, match="idle timeout") as caught:
            await worker.run("hi")
        assert 0.2 <= time.monotonic() - started < 2.0
        assert caught.value.partial.items[-1].text == "Hello!"  # type: ignore[union-attr]
        fake_server.enqueue(Reply.openai_text("ok"), path=CHAT)
        assert (await worker.run("again")).output == "ok"
    finally:
        await model.aclose()


async def test_first_event_timeout(fake_server: FakeProviderServer) -> None:
    timeouts = Timeouts(first_event=0.2)
    model = make_model(fake_server, timeouts=timeouts, retry=RetryPolicy(max_attempts=1))
    try:
        fake_server.enqueue(Reply.openai_text("late", delay=1.0), path=CHAT)
        worker = Worker(model)
        started = time.monotonic()
        with pytest.raises(ModelError, match=r"no first event within 0\.2s"):
            await worker.run("hi")
        assert time.monotonic() - started < 1.0
    finally:
        await model.aclose()
    # with retries, the late answer is abandoned and the next one arrives
    model = make_model(fake_server, timeouts=timeouts)
    try:
        fake_server.enqueue(Reply.openai_text("late", delay=1.0), Reply.openai_text("on time"))
        worker = Worker(model)
        retried: list[Retrying] = []
        async with worker.stream("hi") as run:
            retried.extend([e async for e in run if isinstance(e, Retrying)])
        assert run.result.output == "on time"
        assert len(retried) == 1
    finally:
        await model.aclose()


# --- a follow-up request after each kind of interruption is valid -------------------------------


async def cancel_on(worker: Worker, input: str, trigger: type) -> Cancelled:
    """Run ``input`` and cancel the run when the first ``trigger`` event arrives."""
    async with worker.stream(input) as run:
        async for event in run:
            if isinstance(event, trigger):
                run.cancel("user pressed stop")
    assert isinstance(run.error, Cancelled)
    return run.error


@tool(name="multiply")
async def slow_multiply(a: int, b: int, ctx: ToolContext) -> str:
    """Multiply slowly; stops early and says so when cancelled."""
    await ctx.token.wait()
    return f"gave up on {a}*{b}"


@pytest.mark.parametrize("kind", ["mid-text", "mid-arguments", "during-tool", "model-error"])
async def test_follow_up_after_interruption_is_valid(
    kind: str, fake_server: FakeProviderServer, model: OpenAIChatModel
) -> None:
    tools: list[Any] = [multiply]
    if kind == "mid-text":
        reply = Reply.cassette("openai-chat/text-include-usage", pace=0.02)
    elif kind == "mid-arguments":
        reply = Reply.cassette("openai-chat/tool-call-fragmented", pace=0.02)
    elif kind == "during-tool":
        reply = Reply.cassette("openai-chat/tool-call-fragmented")
        tools = [slow_multiply]
    else:
        reply = Reply.cassette("openai-chat/parallel-tool-calls", drop_after=9)
    fake_server.enqueue(reply, path=CHAT)
    worker = Worker(model, tools=tools)
    if kind == "model-error":
        with pytest.raises(ModelError):
            await worker.run("go")
    else:
        trigger = {"mid-text": TextDelta, "mid-arguments": ToolCallDelta}.get(kind, ToolStarted)
        cancelled = await cancel_on(worker, "go", trigger)
        assert cancelled.reason == "user pressed stop"
    history = worker.history
    if kind == "mid-text":
        assert history[-1].text.startswith("The")  # type: ignore[union-attr]
    if kind == "during-tool":
        assert isinstance(history[-1], ToolResult)
        assert history[-1].status == "interrupted"
        assert "gave up on 1231*2331" in history[-1].content
    if kind in ("mid-arguments", "model-error"):
        cut = [i for i in history if isinstance(i, ToolCall) and not i.complete]
        assert cut, "a call whose arguments were cut off is kept, marked incomplete"

    fake_server.enqueue(Reply.openai_text("Carrying on."), path=CHAT)
    assert (await worker.run("continue")).output == "Carrying on."
    messages = chat_requests(fake_server)[-1]["messages"]
    assert_valid_messages(messages)
    assert messages[-1] == {"role": "user", "content": "continue"}
    assert "interrupted" in messages[-2]["content"]  # the Note, sent as a user message


# --- the cancellation sweep ---------------------------------------------------------------------


async def test_cancellation_sweep_over_a_tool_call_replay(
    fake_server: FakeProviderServer, model: OpenAIChatModel, record_sweep: Any
) -> None:
    fake_server.set_default(Reply.openai_text(["Done", "."]), path=CHAT)
    await Worker(model).run("warm up")  # so the tick count is not the SDK's first-call set-up

    def make_worker() -> Worker:
        # One tool-call reply per worker: a run cancelled before its request reached the server
        # leaves it to the follow-up run; every other request gets the default text.
        fake_server.script([Reply.cassette("openai-chat/tool-call-fragmented", pace=0.0005)])
        return Worker(model, tools=[multiply])

    started = time.monotonic()
    report = await cancellation_sweep(make_worker, "What is 1231 * 2331?", max_checkpoints=100)
    elapsed = time.monotonic() - started
    print(
        f"\nsweep(openai-chat/tool-call-fragmented, pace 0.5 ms): {report.checkpoints} "
        f"checkpoints, every {report.stride}th swept: {report.runs} runs, {report.cancelled} "
        f"cancelled, {report.completed} completed, {elapsed:.1f}s"
    )
    report.raise_for_violations()
    assert report.cancelled > 0
    record_sweep("openai-chat / tool-call-fragmented replay / cancel", report)


async def test_cancellation_sweep_over_a_retry(
    fake_server: FakeProviderServer, model: OpenAIChatModel, record_sweep: Any
) -> None:
    """A 429 with Retry-After, the back-off, then the answer: cancelled all along the way."""
    fake_server.set_default(Reply.openai_text(["Done", "."]), path=CHAT)
    await Worker(model).run("warm up")

    def make_worker() -> Worker:
        fake_server.script(
            [
                Reply.error(429, retry_after=0.02),
                Reply.openai_text(["After ", "the ", "retry."], pace=0.0005),
            ],
            path=CHAT,
        )
        return Worker(model)

    report = await cancellation_sweep(make_worker, "Hello?", max_checkpoints=60)
    report.raise_for_violations()
    assert report.cancelled > 0
    record_sweep("openai-chat / 429 then retry / cancel", report)


# --- parser robustness --------------------------------------------------------------------------


class _Chunks(httpx2.AsyncByteStream):
    def __init__(self, parts: Sequence[bytes]) -> None:
        self._parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts:
            await anyio.lowlevel.checkpoint()
            yield part


def split(body: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(body)) for c in cuts})
    edges = [0, *points, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges) if b > a]


async def stream_events(parts: Sequence[bytes]) -> list[StreamEvent] | ModelError:
    """The events `OpenAIChatModel` yields for a body delivered in ``parts`` (no network)."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Chunks(parts)
        )

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    client = openai.AsyncOpenAI(
        api_key="k", base_url="http://fake.invalid/v1", http_client=http, max_retries=0
    )
    model = OpenAIChatModel("m", client=client, retry=RetryPolicy(max_attempts=1))
    events: list[StreamEvent] = []
    try:
        async with model.stream(ModelRequest(history=(UserMessage(text="hi"),))) as stream:
            async for event in stream:
                events.append(event)
    except ModelError as exc:
        return exc
    finally:
        await client.close()
    return events


BODIES = {
    name: (CASSETTES / f"{name}.sse").read_bytes()
    for name in [
        "openai-chat/parallel-tool-calls",
        "openai-chat/tool-call-fragmented",
        "openai-chat/text-include-usage",
        "openai-chat/refusal",
    ]
}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(sorted(BODIES)),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=40),
)
async def test_any_split_of_a_real_stream_gives_the_same_events(name: str, cuts: list[int]) -> None:
    body = BODIES[name]
    whole = await stream_events([body])
    assert isinstance(whole, list)
    assert whole
    assert await stream_events(split(body, cuts)) == whole
    # byte by byte, once per body and backend, is the extreme split
    if not cuts:
        assert await stream_events([body[i : i + 1] for i in range(len(body))]) == whole


@settings(max_examples=25, deadline=None)
@given(
    garbage=st.one_of(
        st.binary(max_size=300),
        st.lists(
            st.one_of(
                st.sampled_from([b"data: ", b"\n", b"\n\n", b"[DONE]", b"{", b"}", b'"choices":']),
                st.text(max_size=20).map(str.encode),
            ),
            max_size=30,
        ).map(b"".join),
    )
)
async def test_garbage_gives_a_typed_error_never_a_crash(garbage: bytes) -> None:
    outcome = await stream_events([garbage])
    assert isinstance(outcome, ModelError | list)


def test_split_helper() -> None:
    assert split(b"abcdef", [2, 2, 4, 99]) == [b"ab", b"cd", b"ef"]
