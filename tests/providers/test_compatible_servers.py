"""What real servers send, over real HTTP: the quirks of OpenAI-compatible servers (Ollama's
``/v1``, vLLM, llama.cpp, LM Studio, SGLang, OpenRouter, Groq, Azure) and the corners of the
Anthropic Messages and OpenAI Responses protocols that the recorded streams do not show.

Each case is a `FakeProviderServer` reply (usually raw SSE events, as the server writes them),
played through a real `Worker` and the provider's SDK client. Every error path also checks that
the HTTP connection was given back (`assert_connections_released`), that nothing was retried
once content had streamed, and that the same worker runs again with a valid request.
"""

from __future__ import annotations

import datetime
import gc
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from llm_worker import ModelError, Worker, tool
from llm_worker.events import Retrying, StreamError
from llm_worker.items import AssistantMessage, ToolCall, ToolResult, Usage
from llm_worker.models import RetryPolicy
from llm_worker.models._errors import retry_after
from llm_worker.models.anthropic import AnthropicModel
from llm_worker.models.openai_chat import OpenAIChatModel
from llm_worker.models.openai_responses import OpenAIResponsesModel
from llm_worker.testing import FakeProviderServer, Reply

from .conftest import assert_connections_released
from .test_anthropic import assert_valid as assert_valid_anthropic
from .test_anthropic import collect_run
from .test_openai_chat import assert_valid_messages
from .test_openai_responses import assert_valid_input

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
RESPONSES = "/v1/responses"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.05)


# --- tools ----------------------------------------------------------------------------------------

CALLED: list[tuple[str, dict[str, Any]]] = []


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    CALLED.append(("add", {"a": a, "b": b}))
    return a + b


@tool
async def now() -> str:
    """The time; takes no arguments."""
    CALLED.append(("now", {}))
    return "noon"


TOOLS = [add, now]


@pytest.fixture(autouse=True)
def _forget_calls() -> None:
    CALLED.clear()


# --- models ---------------------------------------------------------------------------------------


@pytest.fixture
async def chat(fake_server: FakeProviderServer) -> AsyncIterator[OpenAIChatModel]:
    model = OpenAIChatModel(
        "local-model", base_url=fake_server.openai_base_url, api_key="k", retry=FAST_RETRY
    )
    yield model
    await model.aclose()


@pytest.fixture
async def claude(fake_server: FakeProviderServer) -> AsyncIterator[AnthropicModel]:
    async with AnthropicModel(
        "claude-test", base_url=fake_server.anthropic_base_url, api_key="k", retry=FAST_RETRY
    ) as model:
        yield model


@pytest.fixture
async def responses(fake_server: FakeProviderServer) -> AsyncIterator[OpenAIResponsesModel]:
    model = OpenAIResponsesModel(
        "gpt-4.1-mini", base_url=fake_server.openai_base_url, api_key="k", retry=FAST_RETRY
    )
    yield model
    await model.aclose()


def sent(server: FakeProviderServer, path: str) -> list[Any]:
    return [r.json for r in server.requests if r.path == path]


def kept_message(error: ModelError) -> AssistantMessage:
    [message] = [i for i in error.partial.items if isinstance(i, AssistantMessage)]
    return message


async def retried_once(worker: Worker) -> Retrying:
    """Run ``worker`` to a successful end; it must have retried exactly once: that `Retrying`.
    Nothing from the failed attempt reaches the caller (no `StreamError` either)."""
    events, error = await collect_run(worker, "hi")
    assert error is None
    [retrying] = [e for e in events if isinstance(e, Retrying)]
    assert not [e for e in events if isinstance(e, StreamError)]
    return retrying


PATHS = {"chat": CHAT, "anthropic": MESSAGES, "responses": RESPONSES}


def reply_for(provider: str, text: str) -> Reply:
    """A plain streamed answer in ``provider``'s protocol."""
    if provider == "chat":
        return Reply.openai_text(text)
    if provider == "anthropic":
        return Reply.anthropic_text(text)
    return Reply.responses_text(text)


def assert_valid_body(provider: str, body: Any) -> None:
    """``body``, a request ``provider``'s model sent, is valid for its API."""
    if provider == "chat":
        assert_valid_messages(body["messages"])
    elif provider == "anthropic":
        assert_valid_anthropic(body)
    else:
        assert_valid_input(body["input"])


async def next_run_is_valid(worker: Worker, server: FakeProviderServer, provider: str) -> Any:
    """The same worker runs again and the request it sends is valid; returns that request."""
    path = PATHS[provider]
    server.enqueue(reply_for(provider, "Fine."), path=path)
    assert (await worker.run("next")).output == "Fine."
    body = sent(server, path)[-1]
    assert_valid_body(provider, body)
    return body


# =================================================================================================
# OpenAI Chat Completions and the servers that speak it
# =================================================================================================


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with one choice."""
    choice = {"index": 0, "delta": delta if delta is not None else {}, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "local-model",
        "choices": [choice],
        **extra,
    }


def text_chunks(*pieces: str) -> list[dict[str, Any]]:
    return [chunk({"role": "assistant", "content": ""}), *(chunk({"content": p}) for p in pieces)]


USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


# --- how the stream ends ------------------------------------------------------------------------


async def test_a_stream_without_done_ends_normally_after_its_finish_reason(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    fake_server.enqueue(Reply.openai_text(["Hel", "lo."], done=False), path=CHAT)
    result = await Worker(chat).run("hi")
    assert result.status == "finished"
    assert result.output == "Hello."
    [message] = [i for i in result.items if isinstance(i, AssistantMessage)]
    assert (message.stop_reason, message.interrupted) == ("end_turn", False)
    assert message.usage == Usage(input_tokens=8, output_tokens=2)
    assert len(sent(fake_server, CHAT)) == 1


async def test_tool_calls_without_done_run_after_their_finish_reason(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    call = {"index": 0, "id": "call_1", "type": "function"}
    fake_server.enqueue(
        Reply.sse(
            [
                chunk({"role": "assistant", "tool_calls": [{**call, "function": {"name": "add"}}]}),
                chunk(
                    {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 2, "b": 3}'}}]}
                ),
                chunk({}, "tool_calls"),
            ]
        ),
        Reply.openai_text("5", done=False),
        path=CHAT,
    )
    result = await Worker(chat, tools=TOOLS).run("2+3?")
    assert CALLED == [("add", {"a": 2, "b": 3})]
    assert result.output == "5"


async def test_done_without_a_finish_reason_is_an_interrupted_answer_whose_calls_never_run(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    """``[DONE]`` with no ``finish_reason`` before it is an answer whose end the server did not
    state: llama.cpp's server ends an answer that a second request cut off exactly so. The text
    is kept as interrupted, the call is never run, and nothing is re-generated."""
    whole = {"index": 0, "id": "call_1", "function": {"name": "now", "arguments": "{}"}}
    fake_server.enqueue(
        Reply.sse([chunk({"content": "Checking."}), chunk({"tool_calls": [whole]}), "[DONE]"]),
        path=CHAT,
    )
    worker = Worker(chat, tools=TOOLS)
    with pytest.raises(ModelError, match="without a finish reason") as caught:
        await worker.run("time?")
    assert CALLED == []
    message = kept_message(caught.value)
    assert (message.text, message.stop_reason, message.interrupted) == ("Checking.", None, True)
    [call] = [i for i in caught.value.partial.items if isinstance(i, ToolCall)]
    assert not call.complete
    assert len(sent(fake_server, CHAT)) == 1
    assert_connections_released(chat.client)
    await next_run_is_valid(worker, fake_server, "chat")


async def test_a_stream_cut_before_its_finish_reason_is_an_error_that_keeps_the_text(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    """The body ends cleanly (last chunk sent) but the model never finished: not an answer."""
    cut = {"index": 0, "id": "call_1", "function": {"name": "add", "arguments": '{"a": 1'}}
    fake_server.enqueue(
        Reply.sse([*text_chunks("The answer ", "is"), chunk({"tool_calls": [cut]})]), path=CHAT
    )
    worker = Worker(chat, tools=TOOLS)
    with pytest.raises(ModelError, match="ended before the model finished") as caught:
        await worker.run("question")
    message = kept_message(caught.value)
    assert (message.text, message.interrupted) == ("The answer is", True)
    [call] = [i for i in caught.value.partial.items if isinstance(i, ToolCall)]
    assert not call.complete  # a call cut off is never executed
    assert CALLED == []
    assert len(sent(fake_server, CHAT)) == 1  # content had streamed: not re-generated
    assert_connections_released(chat.client)
    messages = (await next_run_is_valid(worker, fake_server, "chat"))["messages"]
    assert any(m.get("content") == "The answer is" for m in messages if m["role"] == "assistant")


async def test_a_stream_cut_before_any_content_is_retried(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    fake_server.enqueue(
        Reply.sse([chunk({"role": "assistant", "content": ""})]),  # then the body just ends
        Reply.openai_text("Second try."),
        path=CHAT,
    )
    retrying = await retried_once(Worker(chat))
    assert "ended before the model finished" in retrying.error
    assert len(sent(fake_server, CHAT)) == 2


async def test_an_empty_200_body_is_retried_not_taken_as_an_empty_answer(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    fake_server.enqueue(Reply.sse([]), Reply.openai_text("Here."), path=CHAT)
    assert (await retried_once(Worker(chat))).error == "openai answered with an empty stream"
    fake_server.enqueue(*[Reply.sse([])] * FAST_RETRY.max_attempts, path=CHAT)
    worker = Worker(chat)
    with pytest.raises(ModelError, match="empty stream") as caught:
        await worker.run("again")
    assert caught.value.retryable
    assert_connections_released(chat.client)
    await next_run_is_valid(worker, fake_server, "chat")


# --- chunks of unusual shape ----------------------------------------------------------------------


async def test_chunks_with_empty_choices_are_skipped_and_their_usage_counted(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    """Azure's first chunk carries only ``prompt_filter_results``; OpenRouter and OpenAI send
    usage in a last chunk with ``choices: []``; some servers send ``choices: null``."""
    azure_filter = {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [],
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
    fake_server.enqueue(
        Reply.sse(
            [
                azure_filter,
                *text_chunks("Fil", "tered."),
                {"id": "x", "choices": None},
                chunk({}, "stop"),
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "choices": [],
                    "usage": USAGE,
                },
                "[DONE]",
            ]
        ),
        path=CHAT,
    )
    result = await Worker(chat).run("hi")
    assert result.output == "Filtered."
    [message] = [i for i in result.items if isinstance(i, AssistantMessage)]
    assert message.usage == Usage(input_tokens=9, output_tokens=3)


async def test_a_finish_reason_on_a_chunk_with_content_keeps_that_content(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    """llama.cpp and others put the last text and the finish_reason (and usage) in one chunk."""
    fake_server.enqueue(
        Reply.sse([*text_chunks("All "), chunk({"content": "said."}, "length", usage=USAGE)]),
        path=CHAT,
    )
    result = await Worker(chat).run("hi")
    assert result.output == "All said."
    [message] = [i for i in result.items if isinstance(i, AssistantMessage)]
    assert message.stop_reason == "max_tokens"
    assert message.usage == Usage(input_tokens=9, output_tokens=3)


@pytest.mark.parametrize(
    ("field", "server"),
    [("reasoning_content", "DeepSeek, vLLM, llama.cpp"), ("reasoning", "OpenRouter, Ollama")],
)
async def test_reasoning_deltas_of_compatible_servers_become_reasoning(
    field: str, server: str, fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    fake_server.enqueue(
        Reply.sse(
            [
                chunk({"role": "assistant", "content": None, field: "Let me "}),
                chunk({field: "think.", "content": None}),
                chunk({"content": "Four.", field: None}),
                chunk({}, "stop"),
                "[DONE]",
            ]
        ),
        path=CHAT,
    )
    worker = Worker(chat)
    result = await worker.run("2+2?")
    [message] = [i for i in result.items if isinstance(i, AssistantMessage)]
    assert (message.reasoning, message.text, result.output) == ("Let me think.", "Four.", "Four.")
    messages = (await next_run_is_valid(worker, fake_server, "chat"))["messages"]
    assert "think" not in json.dumps(messages)  # Chat Completions has no field to send it back


# --- tool calls as servers really stream them -----------------------------------------------------


def calls(*deltas: dict[str, Any]) -> dict[str, Any]:
    return chunk({"tool_calls": list(deltas)})


def fn(
    index: int | None = None,
    id: str | None = None,
    name: str | None = None,
    arguments: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """One tool-call delta; fields left as None are left out."""
    delta: dict[str, Any] = dict(extra)
    if index is not None:
        delta["index"] = index
    if id is not None:
        delta["id"] = id
        delta["type"] = "function"
    function = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    if function:
        delta["function"] = function
    return delta


TOOL_CALL_STREAMS: dict[str, tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]] = {
    # name: (chunks up to the finish, the calls that must run)
    "openai: id, name and type only on the first fragment": (
        [
            calls(fn(0, "call_a", "add", "")),
            calls(fn(0, arguments='{"a": 1')),
            calls(fn(0, arguments=', "b": 2}')),
            calls(fn(1, "call_b", "add", "")),
            calls(fn(1, arguments='{"a": 3, "b": 4}')),
        ],
        [("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})],
    ),
    "the id first, the name in a later fragment": (
        [
            calls(fn(0, "call_a")),
            calls(fn(0, arguments='{"a": 5,')),
            calls(fn(0, name="add")),
            calls(fn(0, arguments=' "b": 6}')),
        ],
        [("add", {"a": 5, "b": 6})],
    ),
    "ollama: each call whole in one chunk": (
        [calls(fn(0, "call_a", "add", '{"a":1,"b":2}')), calls(fn(1, "call_b", "now", "{}"))],
        [("add", {"a": 1, "b": 2}), ("now", {})],
    ),
    "several whole calls in one chunk, with the finish_reason": (
        [
            chunk(
                {
                    "tool_calls": [
                        fn(0, "call_a", "now", "{}"),
                        fn(1, "call_b", "add", '{"a":7,"b":8}'),
                    ]
                },
                "tool_calls",
            )
        ],
        [("now", {}), ("add", {"a": 7, "b": 8})],
    ),
    "ollama: index 0 for every call (ollama#15457)": (
        [
            calls(fn(0, "call_a", "add", '{"a":1,"b":1}')),
            calls(fn(0, "call_b", "add", '{"a":2,"b":2}')),
        ],
        [("add", {"a": 1, "b": 1}), ("add", {"a": 2, "b": 2})],
    ),
    "no index, ids given, fragments after the first bare": (
        [
            calls(fn(None, "call_a", "add", '{"a": 1')),
            calls(fn(None, arguments=', "b": 9}')),
            calls(fn(None, "call_b", "now", "")),
        ],
        [("add", {"a": 1, "b": 9}), ("now", {})],
    ),
    "no index and no ids, whole calls": (
        [calls(fn(name="add", arguments='{"a":4,"b":4}'), fn(name="now", arguments="{}"))],
        [("add", {"a": 4, "b": 4}), ("now", {})],
    ),
    "sglang: the first fragment indexed differently from the rest (sglang#6310)": (
        [calls(fn(1, "call_a", "add", "")), calls(fn(0, arguments='{"a":3,"b":3}'))],
        [("add", {"a": 3, "b": 3})],
    ),
    "arguments sent as a JSON object, not a string": (
        [calls(fn(0, "call_a", "add", {"a": 2, "b": 5}))],
        [("add", {"a": 2, "b": 5})],
    ),
    "an empty-string id on every fragment": (
        [calls(fn(0, "", "add", '{"a":1,')), calls(fn(0, "", arguments='"b":1}'))],
        [("add", {"a": 1, "b": 1})],
    ),
    "the same id for two calls": (
        [calls(fn(0, "call_0", "now", "{}")), calls(fn(1, "call_0", "now", "{}"))],
        [("now", {}), ("now", {})],
    ),
    "empty-string arguments for a tool without parameters": (
        [calls(fn(0, "call_a", "now", "")), calls(fn(1, "call_b", "now"))],
        [("now", {}), ("now", {})],
    ),
}


@pytest.mark.parametrize("case", list(TOOL_CALL_STREAMS))
async def test_tool_call_deltas_as_servers_stream_them_run_the_right_calls(
    case: str, fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    chunks, expected = TOOL_CALL_STREAMS[case]
    finish = [] if chunks[-1]["choices"][0]["finish_reason"] else [chunk({}, "tool_calls")]
    fake_server.enqueue(Reply.sse([*chunks, *finish, "[DONE]"]), path=CHAT)
    fake_server.enqueue(Reply.openai_text("Done."), path=CHAT)
    worker = Worker(chat, tools=TOOLS)
    result = await worker.run("go")
    assert result.output == "Done."
    assert sorted(CALLED, key=str) == sorted(expected, key=str)
    made = [i for i in result.items if isinstance(i, ToolCall)]
    assert [(c.name, c.arguments) for c in made] == expected
    assert all(c.complete and c.parse_error is None for c in made)
    assert len({c.call_id for c in made}) == len(made)  # unique, so each result pairs up
    results = [i for i in result.items if isinstance(i, ToolResult)]
    assert [r.status for r in results] == ["ok"] * len(made)
    follow_up = sent(fake_server, CHAT)[1]["messages"]
    assert_valid_messages([*follow_up, {"role": "user", "content": "(next)"}])
    [assistant] = [m for m in follow_up if m["role"] == "assistant"]
    assert [json.loads(c["function"]["arguments"]) for c in assistant["tool_calls"]] == [
        arguments for _, arguments in expected
    ]


# --- SSE framing as servers write it --------------------------------------------------------------


def sse_body(newline: bytes = b"\n", space: bytes = b" ") -> list[bytes]:
    """A short answer written with comments, ``event:``/``id:``/``retry:`` lines, and the given
    line ending and ``data:`` spacing; its last event has no blank line after it."""
    p = [json.dumps(c) for c in [*text_chunks("Fra", "med."), chunk({}, "stop")]]
    events = [
        ": keep-alive\n\n",
        f"retry: 3000\nevent: message\nid: 1\ndata: {p[0]}\n\n",
        ": OPENROUTER PROCESSING\n\n",
        f"data: {p[1]}\n\n",
        f"event: chunk\ndata: {p[2]}\n\n: ping\n\n",
        f"data: {p[3]}\n",  # the body ends without the blank line
    ]
    return [e.encode().replace(b"data: ", b"data:" + space).replace(b"\n", newline) for e in events]


@pytest.mark.parametrize(
    ("newline", "space"),
    [(b"\n", b" "), (b"\n", b""), (b"\r\n", b" "), (b"\r\n", b""), (b"\r", b" ")],
    ids=["lf", "lf-no-space", "crlf", "crlf-no-space", "cr"],
)
async def test_sse_framing_variants_give_the_same_answer(
    newline: bytes, space: bytes, fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    fake_server.enqueue(Reply.sse(sse_body(newline, space)), path=CHAT)
    result = await Worker(chat).run("hi")
    assert result.output == "Framed."
    [message] = [i for i in result.items if isinstance(i, AssistantMessage)]
    assert (message.stop_reason, message.interrupted) == ("end_turn", False)
    assert_connections_released(chat.client)


# --- errors inside a 200 stream ---------------------------------------------------------------


OPENROUTER_ERROR = {
    "id": "gen-1",
    "object": "chat.completion.chunk",
    "created": 1_700_000_000,
    "model": "some/model",
    "provider": "SomeProvider",
    "error": {"code": 502, "message": "Provider returned error: upstream disconnected"},
    "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
}


async def test_an_error_chunk_mid_stream_is_a_model_error_that_keeps_the_text(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    """OpenRouter reports a provider failure after text as a chunk with an ``error`` object."""
    fake_server.enqueue(
        Reply.sse([*text_chunks("Once upon", " a time"), OPENROUTER_ERROR]), path=CHAT
    )
    worker = Worker(chat)
    with pytest.raises(ModelError, match="upstream disconnected") as caught:
        await worker.run("story")
    message = kept_message(caught.value)
    assert (message.text, message.interrupted) == ("Once upon a time", True)
    assert len(sent(fake_server, CHAT)) == 1
    assert_connections_released(chat.client)
    messages = (await next_run_is_valid(worker, fake_server, "chat"))["messages"]
    assert any(m.get("content") == "Once upon a time" for m in messages)


@pytest.mark.parametrize(
    ("error_event", "retried"),
    [
        (OPENROUTER_ERROR, True),  # code 502: transient
        ({"error": {"message": "Rate limited", "type": "rate_limit_exceeded"}}, True),
        (("error", {"error": {"message": "Bad schema", "type": "invalid_request_error"}}), False),
        (("error", "plain text: the model crashed"), False),
    ],
    ids=["openrouter-502", "rate-limit", "groq-invalid-request", "not-json"],
)
async def test_an_error_before_any_content_is_retried_only_when_transient(
    error_event: Any, retried: bool, fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    fake_server.enqueue(
        Reply.sse([chunk({"role": "assistant", "content": ""}), error_event]),
        Reply.openai_text("Recovered."),
        path=CHAT,
    )
    worker = Worker(chat)
    events, error = await collect_run(worker, "hi")
    assert_connections_released(chat.client)
    if retried:
        assert error is None
        assert len([e for e in events if isinstance(e, Retrying)]) == 1
        return
    assert isinstance(error, ModelError)
    assert not error.retryable
    assert len(sent(fake_server, CHAT)) == 1
    assert (await worker.run("again")).output == "Recovered."  # the reply left queued
    assert_valid_messages(sent(fake_server, CHAT)[-1]["messages"])


# --- a server that ignores stream=true ------------------------------------------------------------


def completion(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "local-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": USAGE,
    }


async def test_a_json_body_despite_stream_true_is_read_as_the_whole_answer(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    whole_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "add", "arguments": '{"a": 20, "b": 22}'},
    }
    fake_server.enqueue(
        Reply.json(
            completion(
                {
                    "role": "assistant",
                    "content": "Adding.",
                    "reasoning_content": "Simple sum.",
                    "tool_calls": [whole_call],
                },
                "tool_calls",
            )
        ),
        Reply.json(completion({"role": "assistant", "content": "42."}, "stop")),
        path=CHAT,
    )
    result = await Worker(chat, tools=TOOLS).run("20+22?")
    assert CALLED == [("add", {"a": 20, "b": 22})]
    assert result.output == "42."
    first = next(i for i in result.items if isinstance(i, AssistantMessage))
    assert (first.text, first.reasoning, first.stop_reason) == (
        "Adding.",
        "Simple sum.",
        "tool_use",
    )
    assert first.usage == Usage(input_tokens=9, output_tokens=3)


async def test_a_json_error_body_with_status_200_is_a_clear_error(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    fake_server.enqueue(
        Reply.json({"error": {"message": "context length exceeded", "code": "context_length"}}),
        path=CHAT,
    )
    worker = Worker(chat)
    with pytest.raises(ModelError, match="context length exceeded") as caught:
        await worker.run("hi")
    assert not caught.value.retryable
    assert len(sent(fake_server, CHAT)) == 1
    assert_connections_released(chat.client)
    await next_run_is_valid(worker, fake_server, "chat")


async def test_sse_mislabelled_as_json_is_read_as_sse(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    body = b"".join(sse_body())
    fake_server.enqueue(Reply.json(body), path=CHAT)
    assert (await Worker(chat).run("hi")).output == "Framed."


# =================================================================================================
# HTTP errors: every provider, the bodies servers really send
# =================================================================================================

HTTP_ERRORS: dict[str, tuple[int, Any, str, str]] = {
    # name: (status, body, content type, what the error must say)
    "openai-400": (
        400,
        {"error": {"message": "Invalid 'messages[1]'.", "type": "invalid_request_error"}},
        "application/json",
        "Invalid 'messages[1]'.",
    ),
    "openai-401": (
        401,
        {"error": {"message": "Incorrect API key provided: sk-x.", "code": "invalid_api_key"}},
        "application/json",
        "Incorrect API key provided",
    ),
    "ollama-404-string-error": (
        404,
        {"error": 'model "llama9" not found, try pulling it first'},
        "application/json",
        'model "llama9" not found',
    ),
    "vllm-404-top-level-message": (
        404,
        {"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError"},
        "application/json",
        "The model `x` does not exist.",
    ),
    "fastapi-401-detail": (401, {"detail": "Invalid token"}, "application/json", "Invalid token"),
    "openrouter-401-numeric-code": (
        401,
        {"error": {"message": "No auth credentials found", "code": 401}},
        "application/json",
        "No auth credentials found",
    ),
    "anthropic-401": (
        401,
        {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        },
        "application/json",
        "invalid x-api-key",
    ),
    "plain-text-404": (404, b"404 page not found", "text/plain", "404 page not found"),
    "html-400-of-a-proxy": (
        400,
        b"<html><body>Bad Request</body></html>",
        "text/html",
        "Bad Request",
    ),
}


@dataclass
class Served:
    """One provider's model on the fake server."""

    provider: str  # "chat", "anthropic" or "responses"
    path: str
    model: OpenAIChatModel | AnthropicModel | OpenAIResponsesModel


@pytest.fixture(params=["chat", "anthropic", "responses"])
def served(
    request: pytest.FixtureRequest,
    chat: OpenAIChatModel,
    claude: AnthropicModel,
    responses: OpenAIResponsesModel,
) -> Served:
    """Each provider in turn (the test runs once per provider)."""
    provider: str = request.param
    if provider == "chat":
        return Served(provider, CHAT, chat)
    if provider == "anthropic":
        return Served(provider, MESSAGES, claude)
    return Served(provider, RESPONSES, responses)


@pytest.mark.parametrize("case", list(HTTP_ERRORS))
async def test_http_errors_carry_the_servers_message_and_are_not_retried(
    case: str,
    served: Served,
    fake_server: FakeProviderServer,
) -> None:
    status, body, content_type, said = HTTP_ERRORS[case]
    path, model = served.path, served.model
    fake_server.enqueue(Reply.error(status, body, content_type=content_type), path=path)
    worker = Worker(model)
    with pytest.raises(ModelError) as caught:
        await worker.run("hi")
    error = caught.value
    assert f"HTTP {status}: " in str(error)
    assert said in str(error)
    assert error.status_code == status
    assert not error.retryable
    assert len(sent(fake_server, path)) == 1
    assert_connections_released(model.client)
    fake_server.enqueue(reply_for(served.provider, "Works now."), path=path)
    assert (await worker.run("again")).output == "Works now."
    assert_valid_body(served.provider, sent(fake_server, path)[-1])


# --- Retry-After ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ({"retry-after": "0.04"}, 0.04),
        ({"retry-after-ms": "30"}, 0.03),
        ({"retry-after-ms": "30", "retry-after": "1"}, 0.03),  # the finer one wins
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past: now
    ],
    ids=["seconds", "ms", "ms-and-seconds", "http-date-past"],
)
async def test_429_waits_as_long_as_the_server_asks(
    headers: dict[str, str],
    delay: float,
    served: Served,
    fake_server: FakeProviderServer,
) -> None:
    path, model = served.path, served.model
    fake_server.enqueue(
        Reply.error(429, headers=headers), reply_for(served.provider, "Later."), path=path
    )
    retrying = await retried_once(Worker(model))
    assert retrying.delay == pytest.approx(delay)
    assert len(sent(fake_server, path)) == 2


async def test_a_retry_after_date_in_the_future_is_waited_for_up_to_the_policy_maximum(
    fake_server: FakeProviderServer, chat: OpenAIChatModel
) -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    fake_server.enqueue(Reply.error(429, retry_after=later), Reply.openai_text("ok"), path=CHAT)
    retrying = await retried_once(Worker(chat))
    assert retrying.delay == FAST_RETRY.max_delay


class _Limited(Exception):
    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("429")
        self.response = type("Response", (), {"headers": headers})()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "Thu, 01 Jan 2026 00:01:40 GMT"}, 100.0),
        ({"retry-after": "Thu, 01 Jan 2026 00:01:40 -0000"}, 100.0),
        ({"retry-after": "Wed, 31 Dec 2025 23:00:00 GMT"}, 0.0),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "2"}, 2.0),
        ({"retry-after": "whenever"}, None),
        ({"retry-after": ""}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_seconds_milliseconds_and_http_dates(
    headers: dict[str, str], expected: float | None
) -> None:
    start_of_2026 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp()
    assert retry_after(_Limited(headers), now=start_of_2026) == expected


# =================================================================================================
# Anthropic Messages
# =================================================================================================


def message_start(input_tokens: int = 10) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    }


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def text_block(index: int, *pieces: str) -> list[dict[str, Any]]:
    return [
        block_start(index, {"type": "text", "text": ""}),
        *(block_delta(index, {"type": "text_delta", "text": p}) for p in pieces),
        block_stop(index),
    ]


def message_end(reason: str = "end_turn", output_tokens: int = 5) -> list[dict[str, Any]]:
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
        {"type": "message_stop"},
    ]


OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


async def test_anthropic_pings_and_unknown_events_blocks_and_deltas_are_ignored(
    fake_server: FakeProviderServer, claude: AnthropicModel
) -> None:
    fake_server.enqueue(
        Reply.sse(
            [
                message_start(),
                {"type": "ping"},
                {"type": "brand_new_event", "data": {"x": 1}},
                block_start(0, {"type": "text", "text": ""}),
                block_delta(0, {"type": "text_delta", "text": "Known"}),
                block_delta(0, {"type": "citations_delta", "citation": {"cited_text": "x"}}),
                block_stop(0),
                {"type": "ping"},
                block_start(1, {"type": "container_upload", "file_id": "f"}),
                block_delta(1, {"type": "brand_new_delta", "stuff": "y"}),
                block_stop(1),
                *text_block(2, "only."),
                *message_end(),
            ],
            named=True,
        ),
        path=MESSAGES,
    )
    worker = Worker(claude)
    result = await worker.run("hi")
    assert result.output == "Known\n\nonly."  # text split by a skipped block: two paragraphs
    await next_run_is_valid(worker, fake_server, "anthropic")


async def test_anthropic_overloaded_after_message_start_but_before_content_is_retried(
    fake_server: FakeProviderServer, claude: AnthropicModel
) -> None:
    """Anthropic starts the message, then reports ``overloaded_error``: nothing was said, so it
    is retried, and the failed attempt's usage is not counted."""
    fake_server.enqueue(
        Reply.sse([message_start(input_tokens=500), {"type": "ping"}, OVERLOADED], named=True),
        Reply.anthropic_text("Second attempt."),
        path=MESSAGES,
    )
    retrying = await retried_once(Worker(claude))
    assert "overloaded_error" in retrying.error
    assert len(sent(fake_server, MESSAGES)) == 2
    assert_connections_released(claude.client)


async def test_anthropic_usage_of_a_retried_attempt_is_not_counted(
    fake_server: FakeProviderServer, claude: AnthropicModel
) -> None:
    fake_server.enqueue(
        Reply.sse([message_start(input_tokens=500), OVERLOADED], named=True),
        Reply.anthropic_text("Counted once."),
        path=MESSAGES,
    )
    result = await Worker(claude).run("hi")
    [message] = [i for i in result.items if isinstance(i, AssistantMessage)]
    assert message.usage.input_tokens == 8  # the second attempt's only (anthropic_text's)


async def test_anthropic_overloaded_after_text_is_an_error_that_keeps_the_text(
    fake_server: FakeProviderServer, claude: AnthropicModel
) -> None:
    fake_server.enqueue(
        Reply.sse(
            [
                message_start(),
                block_start(0, {"type": "text", "text": ""}),
                block_delta(0, {"type": "text_delta", "text": "Half a "}),
                block_delta(0, {"type": "text_delta", "text": "thought"}),
                OVERLOADED,
            ],
            named=True,
        ),
        path=MESSAGES,
    )
    worker = Worker(claude)
    with pytest.raises(ModelError, match="Overloaded") as caught:
        await worker.run("hi")
    assert caught.value.retryable  # transient, but content had streamed: not re-generated
    message = kept_message(caught.value)
    assert (message.text, message.interrupted) == ("Half a thought", True)
    assert len(sent(fake_server, MESSAGES)) == 1
    assert_connections_released(claude.client)
    body = await next_run_is_valid(worker, fake_server, "anthropic")
    assert body["messages"][1]["content"] == [{"type": "text", "text": "Half a thought"}]


@pytest.mark.parametrize("reason", ["max_tokens", "refusal", "pause_turn", "stop_sequence"])
async def test_anthropic_message_delta_carries_the_stop_reason_and_usage(
    reason: str, fake_server: FakeProviderServer, claude: AnthropicModel
) -> None:
    fake_server.enqueue(
        Reply.sse(
            [message_start(12), *text_block(0, "Partial"), *message_end(reason, 33)], named=True
        ),
        path=MESSAGES,
    )
    worker = Worker(claude)
    result = await worker.run("hi")
    assert result.status == "finished"
    [message] = [i for i in result.items if isinstance(i, AssistantMessage)]
    assert (message.text, message.stop_reason, message.interrupted) == ("Partial", reason, False)
    assert message.usage == Usage(input_tokens=12, output_tokens=33)
    await next_run_is_valid(worker, fake_server, "anthropic")


async def test_anthropic_tool_use_with_no_or_empty_deltas_runs_with_no_arguments(
    fake_server: FakeProviderServer, claude: AnthropicModel
) -> None:
    empty_input = {"type": "input_json_delta", "partial_json": ""}
    fake_server.enqueue(
        Reply.sse(
            [
                message_start(),
                block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}),
                block_delta(0, empty_input),
                block_stop(0),
                block_start(1, {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}),
                block_stop(1),
                *message_end("tool_use"),
            ],
            named=True,
        ),
        Reply.anthropic_text("Noon twice."),
        path=MESSAGES,
    )
    worker = Worker(claude, tools=TOOLS)
    result = await worker.run("time?")
    assert CALLED == [("now", {}), ("now", {})]
    assert result.output == "Noon twice."
    body = sent(fake_server, MESSAGES)[1]
    assert_valid_anthropic(body)
    assert [b["input"] for b in body["messages"][1]["content"]] == [{}, {}]


async def test_anthropic_body_cut_before_any_content_is_retried(
    fake_server: FakeProviderServer, claude: AnthropicModel
) -> None:
    fake_server.enqueue(
        Reply.sse([message_start(), {"type": "ping"}], named=True),  # and the body ends
        Reply.anthropic_text("Whole."),
        path=MESSAGES,
    )
    retrying = await retried_once(Worker(claude))
    assert "before message_stop" in retrying.error


async def test_anthropic_json_message_despite_stream_true_is_read_as_the_whole_answer(
    fake_server: FakeProviderServer, claude: AnthropicModel
) -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [
            {"type": "thinking", "thinking": "Sum it.", "signature": "sig"},
            {"type": "text", "text": "Adding."},
            {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 1, "b": 41}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 20, "output_tokens": 7},
    }
    fake_server.enqueue(Reply.json(message), Reply.anthropic_text("42."), path=MESSAGES)
    worker = Worker(claude, tools=TOOLS)
    result = await worker.run("1+41?")
    assert CALLED == [("add", {"a": 1, "b": 41})]
    first = next(i for i in result.items if isinstance(i, AssistantMessage))
    assert (first.reasoning, first.text, first.stop_reason) == ("Sum it.", "Adding.", "tool_use")
    assert first.usage == Usage(input_tokens=20, output_tokens=7)
    follow_up = sent(fake_server, MESSAGES)[1]
    assert_valid_anthropic(follow_up)
    assert follow_up["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "Sum it.",
        "signature": "sig",
    }


# =================================================================================================
# OpenAI Responses
# =================================================================================================


def responses_stream(*events: dict[str, Any], done: bool = False) -> Reply:
    """Responses events with sequence numbers, each with its ``event:`` line."""
    numbered = [{**e, "sequence_number": n} if "type" in e else e for n, e in enumerate(events)]
    return Reply.sse([*numbered, *(["[DONE]"] if done else [])], named=True)


def response(status: str, output: Sequence[Any] = (), **extra: Any) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "status": status,
        "output": list(output),
        "usage": {"input_tokens": 11, "output_tokens": 4, "total_tokens": 15},
        **extra,
    }


CREATED = {"type": "response.created", "response": response("in_progress")}
MESSAGE_ITEM = {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress"}


def message_item(text: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {**MESSAGE_ITEM, "status": "completed", "content": [part]}


def call_item(call_id: str, name: str, arguments: str | None) -> dict[str, Any]:
    item = {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name}
    return item if arguments is None else {**item, "arguments": arguments}


def args_delta(index: int, delta: str) -> dict[str, Any]:
    return {"type": "response.function_call_arguments.delta", "output_index": index, "delta": delta}


def args_done(index: int, arguments: str) -> dict[str, Any]:
    return {
        "type": "response.function_call_arguments.done",
        "output_index": index,
        "arguments": arguments,
    }


def item_added(index: int, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "response.output_item.added", "output_index": index, "item": item}


def item_done(index: int, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "response.output_item.done", "output_index": index, "item": item}


ARGS = '{"a": 19, "b": 23}'
RESPONSES_CALL_STREAMS: dict[str, list[dict[str, Any]]] = {
    "deltas, then both done events": [
        item_added(0, call_item("c1", "add", "")),
        args_delta(0, '{"a": 19, '),
        args_delta(0, '"b": 23}'),
        args_done(0, ARGS),
        item_done(0, call_item("c1", "add", ARGS)),
    ],
    "arguments only in function_call_arguments.done": [
        item_added(0, call_item("c1", "add", "")),
        args_done(0, ARGS),
        item_done(0, call_item("c1", "add", None)),
    ],
    "arguments only in output_item.done": [
        item_added(0, call_item("c1", "add", "")),
        item_done(0, call_item("c1", "add", ARGS)),
    ],
    "the call whole in output_item.added": [
        item_added(0, call_item("c1", "add", ARGS)),
        item_done(0, call_item("c1", "add", ARGS)),
    ],
    "no output_item.done: closed by response.completed": [
        item_added(0, call_item("c1", "add", "")),
        args_delta(0, '{"a": 19, '),
    ],
}


@pytest.mark.parametrize("case", list(RESPONSES_CALL_STREAMS))
async def test_responses_function_call_arguments_are_taken_from_wherever_they_come(
    case: str, fake_server: FakeProviderServer, responses: OpenAIResponsesModel
) -> None:
    completed = response("completed", [call_item("c1", "add", ARGS)])
    fake_server.enqueue(
        responses_stream(
            CREATED,
            *RESPONSES_CALL_STREAMS[case],
            {"type": "response.completed", "response": completed},
        ),
        Reply.responses_text("42."),
        path=RESPONSES,
    )
    worker = Worker(responses, tools=TOOLS)
    result = await worker.run("19+23?")
    assert CALLED == [("add", {"a": 19, "b": 23})]
    [call] = [i for i in result.items if isinstance(i, ToolCall)]
    assert (call.raw_arguments, call.complete) == (ARGS, True)
    assert result.output == "42."
    follow_up = sent(fake_server, RESPONSES)[1]["input"]
    assert_valid_input(follow_up)
    assert follow_up[1]["arguments"] == ARGS


async def test_responses_text_and_summaries_sent_only_whole_are_kept_once(
    fake_server: FakeProviderServer, responses: OpenAIResponsesModel
) -> None:
    """A server that streams no deltas, only the ``*.done`` events and the finished items."""
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": []}
    summary = [
        {"type": "summary_text", "text": "First."},
        {"type": "summary_text", "text": "Then."},
    ]
    where = {"item_id": "rs_1", "output_index": 0}
    fake_server.enqueue(
        responses_stream(
            CREATED,
            item_added(0, reasoning),
            {"type": "response.reasoning_summary_part.added", **where, "summary_index": 0},
            {"type": "response.reasoning_summary_text.done", **where, "text": "First."},
            {"type": "response.reasoning_summary_part.added", **where, "summary_index": 1},
            {"type": "response.reasoning_summary_text.done", **where, "text": "Then."},
            item_done(0, {**reasoning, "summary": summary}),
            item_added(1, MESSAGE_ITEM),
            {"type": "response.output_text.done", "output_index": 1, "text": "Whole text."},
            item_done(1, message_item("Whole text.")),
            {"type": "response.completed", "response": response("completed")},
        ),
        path=RESPONSES,
    )
    result = await Worker(responses).run("hi")
    [message] = [i for i in result.items if isinstance(i, AssistantMessage)]
    assert (message.reasoning, message.text) == ("First.\n\nThen.", "Whole text.")


async def test_responses_unknown_event_types_are_ignored(
    fake_server: FakeProviderServer, responses: OpenAIResponsesModel
) -> None:
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    fake_server.enqueue(
        responses_stream(
            CREATED,
            {"type": "response.in_progress", "response": response("in_progress")},
            {"type": "response.brand_new.delta", "delta": "ignored"},
            item_added(0, MESSAGE_ITEM),
            {"type": "response.output_text.annotation.added", **where, "annotation": {}},
            {"type": "response.output_text.delta", **where, "delta": "Known."},
            {"type": "keepalive"},
            item_done(0, message_item("Known.")),
            {"type": "response.completed", "response": response("completed")},
            done=True,  # some compatible servers end with [DONE] too
        ),
        path=RESPONSES,
    )
    worker = Worker(responses)
    assert (await worker.run("hi")).output == "Known."
    await next_run_is_valid(worker, fake_server, "responses")


async def test_responses_incomplete_for_max_output_tokens_keeps_the_text_as_finished(
    fake_server: FakeProviderServer, responses: OpenAIResponsesModel
) -> None:
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    incomplete = response("incomplete", incomplete_details={"reason": "max_output_tokens"})
    fake_server.enqueue(
        responses_stream(
            CREATED,
            item_added(0, MESSAGE_ITEM),
            {"type": "response.output_text.delta", **where, "delta": "Cut by the lim"},
            {"type": "response.incomplete", "response": incomplete},
        ),
        path=RESPONSES,
    )
    worker = Worker(responses)
    result = await worker.run("hi")
    [message] = [i for i in result.items if isinstance(i, AssistantMessage)]
    assert (message.text, message.stop_reason) == ("Cut by the lim", "max_tokens")
    assert message.usage == Usage(input_tokens=11, output_tokens=4)
    await next_run_is_valid(worker, fake_server, "responses")


@pytest.mark.parametrize(
    "failure",
    [
        {
            "type": "response.failed",
            "response": response("failed", error={"code": "server_error", "message": "Oops"}),
        },
        {"type": "error", "code": "rate_limit_exceeded", "message": "Slow down", "param": None},
        {"error": {"message": "Upstream overloaded", "code": 503}},  # a proxy's bare error object
    ],
    ids=["response.failed", "error-event", "bare-error-object"],
)
async def test_responses_transient_failure_before_content_is_retried(
    failure: dict[str, Any], fake_server: FakeProviderServer, responses: OpenAIResponsesModel
) -> None:
    fake_server.enqueue(
        responses_stream(CREATED, failure), Reply.responses_text("Retried."), path=RESPONSES
    )
    await retried_once(Worker(responses))  # and the failed attempt's StreamError is not shown
    assert_connections_released(responses.client)


@pytest.mark.parametrize(
    ("failure", "retryable"),
    [
        (
            {
                "type": "response.failed",
                "response": response("failed", error={"code": "server_error", "message": "Oops"}),
            },
            True,
        ),
        (
            {"type": "error", "code": "invalid_prompt", "message": "Bad prompt.", "param": None},
            False,
        ),
        ({"error": {"message": "Bad gateway", "code": 502}}, True),
    ],
    ids=["response.failed", "error-event", "bare-error-object"],
)
async def test_responses_failure_after_text_is_an_error_that_keeps_the_text(
    failure: dict[str, Any],
    retryable: bool,
    fake_server: FakeProviderServer,
    responses: OpenAIResponsesModel,
) -> None:
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    fake_server.enqueue(
        responses_stream(
            CREATED,
            item_added(0, MESSAGE_ITEM),
            {"type": "response.output_text.delta", **where, "delta": "So far"},
            failure,
        ),
        path=RESPONSES,
    )
    worker = Worker(responses)
    events, error = await collect_run(worker, "hi")
    assert isinstance(error, ModelError)
    assert error.retryable is retryable
    assert [type(e) for e in events if isinstance(e, StreamError)] == [StreamError]  # UIs see it
    message = kept_message(error)
    assert (message.text, message.interrupted) == ("So far", True)
    assert len(sent(fake_server, RESPONSES)) == 1
    assert_connections_released(responses.client)
    items = (await next_run_is_valid(worker, fake_server, "responses"))["input"]
    assert {"role": "assistant", "content": [{"type": "output_text", "text": "So far"}]} in items


async def test_responses_json_body_despite_stream_true_is_read_as_the_whole_answer(
    fake_server: FakeProviderServer, responses: OpenAIResponsesModel
) -> None:
    reasoning = {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "Add them."}],
        "encrypted_content": "ENC",
    }
    whole = response(
        "completed", [reasoning, message_item("Adding."), call_item("c1", "add", ARGS)]
    )
    fake_server.enqueue(
        Reply.json(whole), Reply.json(response("completed", [message_item("42.")])), path=RESPONSES
    )
    worker = Worker(responses, tools=TOOLS)
    result = await worker.run("19+23?")
    assert CALLED == [("add", {"a": 19, "b": 23})]
    assert result.output == "42."
    first = next(i for i in result.items if isinstance(i, AssistantMessage))
    assert (first.reasoning, first.text, first.stop_reason) == ("Add them.", "Adding.", "tool_use")
    follow_up = sent(fake_server, RESPONSES)[1]["input"]
    assert_valid_input(follow_up)
    assert follow_up[1]["encrypted_content"] == "ENC"


async def test_responses_stream_cut_before_its_terminal_event_keeps_the_text(
    fake_server: FakeProviderServer, responses: OpenAIResponsesModel
) -> None:
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    fake_server.enqueue(
        responses_stream(
            CREATED,
            item_added(0, MESSAGE_ITEM),
            {"type": "response.output_text.delta", **where, "delta": "Almost"},
        ),
        path=RESPONSES,
    )
    worker = Worker(responses)
    with pytest.raises(ModelError, match="ended before the response was complete") as caught:
        await worker.run("hi")
    assert kept_message(caught.value).text == "Almost"
    assert len(sent(fake_server, RESPONSES)) == 1
    assert_connections_released(responses.client)
    await next_run_is_valid(worker, fake_server, "responses")


# --- every provider: the error paths leave no connection behind -----------------------------------

FAULTS: dict[str, Callable[[str], Reply]] = {
    "dropped-mid-stream": lambda provider: {
        "chat": Reply.openai_text(["a", "b", "c"], drop_after=3),
        "anthropic": Reply.anthropic_text(["a", "b", "c"], drop_after=5),
        "responses": Reply.responses_text(["a", "b", "c"], drop_after=6),
    }[provider],
    "malformed-mid-stream": lambda provider: {
        "chat": Reply.openai_text(["a", "b", "c"], malformed_at=3),
        "anthropic": Reply.anthropic_text(["a", "b", "c"], malformed_at=5),
        "responses": Reply.responses_text(["a", "b", "c"], malformed_at=6),
    }[provider],
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_stream_failing_mid_way_releases_its_connection_and_keeps_the_text(
    fault: str,
    served: Served,
    fake_server: FakeProviderServer,
) -> None:
    path, model = served.path, served.model
    fake_server.enqueue(FAULTS[fault](served.provider), path=path)
    worker = Worker(model)
    with pytest.raises(ModelError) as caught:
        await worker.run("hi")
    message = kept_message(caught.value)
    assert (message.text, message.interrupted) == ("ab", True)
    assert len(sent(fake_server, path)) == 1
    assert_connections_released(model.client)
    fake_server.enqueue(reply_for(served.provider, "Again."), path=path)
    assert (await worker.run("again")).output == "Again."
    assert_valid_body(served.provider, sent(fake_server, path)[-1])


def every_path(provider: str) -> list[Reply]:
    """A normal answer, a retried 429, an error mid-stream, a cut-off body, a JSON body."""
    if provider == "chat":
        return [
            Reply.openai_text(["a", "b"]),
            Reply.error(429, headers={"retry-after-ms": "1"}),
            Reply.openai_text("ok", done=False),
            Reply.sse([*text_chunks("x"), OPENROUTER_ERROR]),
            Reply.sse(text_chunks("cut")),
            Reply.json(completion({"role": "assistant", "content": "whole"}, "stop")),
        ]
    if provider == "anthropic":
        return [
            Reply.anthropic_text(["a", "b"]),
            Reply.error(429, headers={"retry-after-ms": "1"}),
            Reply.anthropic_text("ok"),
            Reply.sse([message_start(), *text_block(0, "x"), OVERLOADED], named=True),
            Reply.sse([message_start(), *text_block(0, "cut")], named=True),
            Reply.json({"type": "message", "content": [{"type": "text", "text": "whole"}]}),
        ]
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    head = [CREATED, item_added(0, MESSAGE_ITEM)]
    text = {"type": "response.output_text.delta", **where, "delta": "x"}
    return [
        Reply.responses_text(["a", "b"]),
        Reply.error(429, headers={"retry-after-ms": "1"}),
        Reply.responses_text("ok"),
        responses_stream(*head, text, {"type": "error", "code": "bad", "message": "no"}),
        responses_stream(*head, text),
        Reply.json(response("completed", [message_item("whole")])),
    ]


async def test_no_stream_reader_is_left_to_the_garbage_collector_on_any_path(
    served: Served,
    fake_server: FakeProviderServer,
    finalised_generators: list[str],
) -> None:
    """Every async generator on the stream path — ours, the SDK's, httpx2's — is finished in the
    task that read it, whatever ended the stream (guarantee 9: nothing left running after a run)."""
    path, model = served.path, served.model
    replies = every_path(served.provider)
    fake_server.enqueue(*replies, path=path)
    worker = Worker(model)
    outcomes = []
    for _ in range(len(replies) - 1):  # the 429 and its retry are one run
        try:
            outcomes.append((await worker.run("hi")).output)
        except ModelError as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes == ["ab", "ok", "ModelError", "ModelError", "whole"]
    assert_connections_released(model.client)
    gc.collect()
    assert finalised_generators == []
