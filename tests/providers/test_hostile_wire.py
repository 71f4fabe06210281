"""Wire behaviour no polite server has, over real loopback HTTP, on all three protocols.

Each case is played by `RawServer` (bytes exactly as written, then a reset or a close in the
middle of the chunked body) through a real `Worker` and the provider's SDK client:

* a complete answer followed by a dropped connection is a complete answer (its calls run);
* an error event followed by an abrupt close keeps the server's message, and a 400-type error
  is never retried — neither in a stream nor as an HTTP status whose body was cut;
* an answer whose end the server never stated (``[DONE]`` with no ``finish_reason``, no
  terminal event) is interrupted: its text kept as interrupted, its calls never run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest

from llm_worker import ModelError, Worker, tool
from llm_worker.events import Retrying
from llm_worker.items import AssistantMessage, ToolCall, ToolResult
from llm_worker.models import EventTooLarge, RetryPolicy
from llm_worker.models.anthropic import AnthropicModel
from llm_worker.models.gemini import GeminiModel
from llm_worker.models.openai_chat import OpenAIChatModel
from llm_worker.models.openai_responses import OpenAIResponsesModel

from .raw_server import (
    LAST_CHUNK,
    Ending,
    RawServer,
    Script,
    chunked,
    json_response,
    script,
    sse,
    stream_head,
)
from .test_anthropic import collect_run

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)
PROTOCOLS = ["chat", "responses", "anthropic", "gemini"]
Model = OpenAIChatModel | OpenAIResponsesModel | AnthropicModel | GeminiModel

CALLED: list[tuple[int, int]] = []


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    CALLED.append((a, b))
    return a + b


@pytest.fixture(autouse=True)
def _forget_calls() -> None:
    CALLED.clear()


@pytest.fixture
def server() -> Iterator[RawServer]:
    with RawServer() as running:
        yield running


def make_model(protocol: str, server: RawServer, **options: Any) -> Model:
    options.setdefault("api_key", "k")
    options.setdefault("retry", FAST_RETRY)
    if protocol == "chat":
        return OpenAIChatModel("local-model", base_url=server.base_url + "/v1", **options)
    if protocol == "responses":
        return OpenAIResponsesModel("gpt-4.1-mini", base_url=server.base_url + "/v1", **options)
    if protocol == "gemini":
        return GeminiModel("gemini-test", base_url=server.base_url, **options)
    return AnthropicModel("claude-test", base_url=server.base_url, **options)


@pytest.fixture
async def models(server: RawServer) -> AsyncIterator[Callable[..., Model]]:
    """A factory of models pointed at ``server``; every model made is closed after the test."""
    made: list[Model] = []

    def factory(protocol: str, **options: Any) -> Model:
        model = make_model(protocol, server, **options)
        made.append(model)
        return model

    yield factory
    for model in made:
        await model.aclose()


# --- streams in each protocol, as payloads --------------------------------------------------------


def chat_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "c1", "object": "chat.completion.chunk", "choices": [choice], **extra}


def responses_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


def responses_envelope(status: str, output: list[Any]) -> dict[str, Any]:
    usage = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    return {
        "id": "resp_1",
        "object": "response",
        "status": status,
        "output": output,
        "usage": usage if status != "in_progress" else None,
    }


GEMINI_USAGE = {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10}


def gemini_chunk(
    *parts: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    chunk: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-test"}
    if usage is not None:
        chunk["usageMetadata"] = usage
    return chunk


def gemini_call(arguments: dict[str, Any], call_id: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"name": "add", "args": arguments}
    if call_id is not None:
        call["id"] = call_id
    return {"functionCall": call}


def anthropic_event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


ANTHROPIC_START = anthropic_event(
    "message_start",
    message={
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-test",
        "usage": {"input_tokens": 7, "output_tokens": 1},
    },
)


def tool_call_answer(protocol: str) -> tuple[list[bytes], list[bytes]]:
    """A complete answer that says something and asks for ``add(2, 3)``, as SSE events: (the
    events up to and including the server's statement of its end, the events after that)."""
    arguments = '{"a": 2, "b": 3}'
    if protocol == "chat":
        call = {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "add", "arguments": arguments},
        }
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        return (
            sse(
                chat_chunk({"role": "assistant", "content": "Adding."}),
                chat_chunk({"tool_calls": [call]}),
                chat_chunk({}, "tool_calls"),
            ),
            sse(
                {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage},
                "[DONE]",
            ),
        )
    if protocol == "responses":
        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Adding."}],
        }
        call = {
            "id": "fc_1",
            "type": "function_call",
            "call_id": "call_1",
            "name": "add",
            "arguments": "",
        }
        done_call = {**call, "arguments": arguments}
        return (
            sse(
                responses_event("response.created", response=responses_envelope("in_progress", [])),
                responses_event(
                    "response.output_item.added", output_index=0, item={**message, "content": []}
                ),
                responses_event(
                    "response.output_text.delta", output_index=0, content_index=0, delta="Adding."
                ),
                responses_event("response.output_item.done", output_index=0, item=message),
                responses_event("response.output_item.added", output_index=1, item=call),
                responses_event(
                    "response.function_call_arguments.delta", output_index=1, delta=arguments
                ),
                responses_event("response.output_item.done", output_index=1, item=done_call),
                responses_event(
                    "response.completed",
                    response=responses_envelope("completed", [message, done_call]),
                ),
                named=True,
            ),
            [],
        )
    if protocol == "gemini":
        said = gemini_chunk({"text": "Adding."})
        call = gemini_chunk(gemini_call({"a": 2, "b": 3}), finish="STOP", usage=GEMINI_USAGE)
        return sse(said, call), []  # the finishReason chunk is the last
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {}}
    return (
        sse(
            ANTHROPIC_START,
            anthropic_event(
                "content_block_start", index=0, content_block={"type": "text", "text": ""}
            ),
            anthropic_event(
                "content_block_delta", index=0, delta={"type": "text_delta", "text": "Adding."}
            ),
            anthropic_event("content_block_stop", index=0),
            anthropic_event("content_block_start", index=1, content_block=tool_use),
            anthropic_event(
                "content_block_delta",
                index=1,
                delta={"type": "input_json_delta", "partial_json": arguments},
            ),
            anthropic_event("content_block_stop", index=1),
            anthropic_event(
                "message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 3}
            ),
            named=True,
        ),
        sse(anthropic_event("message_stop"), named=True),
    )


def text_answer(protocol: str, text: str) -> list[bytes]:
    """A complete plain answer, as SSE events."""
    if protocol == "gemini":
        return sse(gemini_chunk({"text": text}, finish="STOP", usage=GEMINI_USAGE))
    if protocol == "chat":
        return sse(chat_chunk({"content": text}), chat_chunk({}, "stop"), "[DONE]")
    if protocol == "responses":
        message = {
            "id": "msg_2",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text}],
        }
        return sse(
            responses_event(
                "response.output_item.added", output_index=0, item={**message, "content": []}
            ),
            responses_event(
                "response.output_text.delta", output_index=0, content_index=0, delta=text
            ),
            responses_event("response.output_item.done", output_index=0, item=message),
            responses_event(
                "response.completed", response=responses_envelope("completed", [message])
            ),
            named=True,
        )
    return sse(
        ANTHROPIC_START,
        anthropic_event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        anthropic_event("content_block_delta", index=0, delta={"type": "text_delta", "text": text}),
        anthropic_event("content_block_stop", index=0),
        anthropic_event(
            "message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 1}
        ),
        anthropic_event("message_stop"),
        named=True,
    )


def polite(events: list[bytes]) -> Script:
    """``events`` as a properly ended chunked stream."""
    return script([stream_head(), *chunked(*events), LAST_CHUNK])


def text_so_far(protocol: str, text: str) -> list[bytes]:
    """The first events of an answer that says ``text`` (no statement of its end)."""
    if protocol == "chat":
        return sse(chat_chunk({"role": "assistant", "content": text}))
    if protocol == "gemini":
        usage = {"promptTokenCount": 7, "candidatesTokenCount": 1}
        return sse(gemini_chunk({"text": text}, usage=usage))
    if protocol == "responses":
        item = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
        return sse(
            responses_event("response.output_item.added", output_index=0, item=item),
            responses_event(
                "response.output_text.delta", output_index=0, content_index=0, delta=text
            ),
            named=True,
        )
    return sse(
        ANTHROPIC_START,
        anthropic_event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        anthropic_event("content_block_delta", index=0, delta={"type": "text_delta", "text": text}),
        named=True,
    )


def error_event(protocol: str, message: str, kind: str = "invalid_request_error") -> bytes:
    """An error event in ``protocol``'s shape; ``kind`` is its error type (or code)."""
    if protocol == "chat":  # llama.cpp and vLLM send {"error": {...}} as a data event
        code = 400 if kind == "invalid_request_error" else 503
        [event] = sse({"error": {"message": message, "type": kind, "code": code}})
    elif protocol == "gemini":
        code, status = (400, "INVALID_ARGUMENT") if kind == "invalid_request_error" else (503, "")
        [event] = sse({"error": {"code": code, "message": message, "status": status}})
    elif protocol == "responses":
        name = "context_length_exceeded" if kind == "invalid_request_error" else "server_error"
        [event] = sse(
            {"type": "error", "code": name, "message": message, "param": None}, named=True
        )
    else:
        [event] = sse({"type": "error", "error": {"type": kind, "message": message}}, named=True)
    return event


def first_answer(result_items: Sequence[Any]) -> AssistantMessage:
    return next(i for i in result_items if isinstance(i, AssistantMessage))


# =================================================================================================
# 13. A complete answer, then a dropped connection
# =================================================================================================

# Where the connection drops: right after the event that states the end, or after everything
# the server sends (the usage chunk and [DONE], message_stop), before the chunked body's end.
DROP_POINTS = ["after-the-end-is-stated", "after-the-last-event"]


@pytest.mark.parametrize("ending", ["fin", "rst"])
@pytest.mark.parametrize("where", DROP_POINTS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_complete_answer_followed_by_a_dropped_connection_is_complete_and_its_calls_run(
    protocol: str,
    where: str,
    ending: Ending,
    server: RawServer,
    models: Callable[..., Model],
) -> None:
    stated, rest = tool_call_answer(protocol)
    events = stated if where == "after-the-end-is-stated" else [*stated, *rest]
    server.play(
        script([stream_head(), *chunked(*events)], ending, linger=0.05),
        polite(text_answer(protocol, "5")),
    )
    result = await Worker(models(protocol), tools=[add]).run("2 + 3?")
    assert result.status == "finished"
    assert result.output == "5"
    assert CALLED == [(2, 3)]
    answer = first_answer(result.items)
    assert (answer.text, answer.interrupted, answer.stop_reason) == ("Adding.", False, "tool_use")
    [call] = [i for i in result.items if isinstance(i, ToolCall)]
    assert call.complete
    [outcome] = [i for i in result.items if isinstance(i, ToolResult)]
    assert (outcome.status, outcome.content) == ("ok", "5")
    assert len(server.requests) == 2  # nothing was re-generated


# =================================================================================================
# 14. An error event, then an abrupt close; a 400 is never retried
# =================================================================================================

SERVER_SAYS = "This model's maximum context length is 4096 tokens; you sent 9000"


@pytest.mark.parametrize("ending", ["fin", "rst"])
@pytest.mark.parametrize("after_text", [False, True], ids=["first-event", "after-text"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_error_event_followed_by_an_abrupt_close_keeps_the_servers_message_unretried(
    protocol: str,
    after_text: bool,
    ending: Ending,
    server: RawServer,
    models: Callable[..., Model],
) -> None:
    before = text_so_far(protocol, "Partial") if after_text else []
    parts = [stream_head(), *chunked(*before, error_event(protocol, SERVER_SAYS))]
    server.play(*[script(parts, ending, linger=0.05)] * 3)
    worker = Worker(models(protocol))
    events, error = await collect_run(worker, "hi")
    assert isinstance(error, ModelError)
    assert SERVER_SAYS in str(error)
    assert "could not be reached" not in str(error)
    assert not error.retryable
    assert not [e for e in events if isinstance(e, Retrying)]
    assert len(server.requests) == 1
    if after_text:
        answer = first_answer(error.partial.items)
        assert (answer.text, answer.interrupted) == ("Partial", True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_transient_error_event_followed_by_an_abrupt_close_is_retried_with_its_message(
    protocol: str, server: RawServer, models: Callable[..., Model]
) -> None:
    kind = "overloaded_error" if protocol == "anthropic" else "server_error"
    event = error_event(protocol, "The engine is overloaded right now", kind)
    server.play(
        script([stream_head(), *chunked(event)], "rst", linger=0.05),
        polite(text_answer(protocol, "Fine.")),
    )
    events, error = await collect_run(Worker(models(protocol)), "hi")
    assert error is None
    [retrying] = [e for e in events if isinstance(e, Retrying)]
    assert "The engine is overloaded right now" in retrying.error
    assert len(server.requests) == 2


@pytest.mark.parametrize("ending", ["fin", "rst"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_http_400_whose_body_is_cut_is_that_400_and_is_never_retried(
    protocol: str, ending: Ending, server: RawServer, models: Callable[..., Model]
) -> None:
    """The status line said 400; a connection that breaks while the SDK reads the error body
    does not make it a retryable "could not be reached"."""
    whole = json_response(400, {"error": {"type": "invalid_request_error", "message": "x" * 400}})
    server.play(*[script([whole[:-200]], ending, linger=0.05)] * 3)
    events, error = await collect_run(Worker(models(protocol)), "hi")
    assert isinstance(error, ModelError)
    assert error.status_code == 400
    assert not error.retryable
    assert "HTTP 400" in str(error)
    assert not [e for e in events if isinstance(e, Retrying)]
    assert len(server.requests) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_400_type_error_event_is_never_retried_whatever_else_it_says(
    protocol: str, server: RawServer, models: Callable[..., Model]
) -> None:
    """An error object that states status 400 is final even if its type looks transient."""
    said = "bad request, says the status"
    if protocol == "chat":
        [event] = sse({"error": {"message": said, "type": "server_error", "code": 400}})
    elif protocol == "responses":
        payload = {"type": "error", "code": "server_error", "status": 400, "message": said}
        [event] = sse(payload, named=True)
    elif protocol == "gemini":
        [event] = sse({"error": {"code": 400, "message": said, "status": "UNAVAILABLE"}})
    else:
        error = {"type": "api_error", "message": said, "status_code": 400}
        [event] = sse({"type": "error", "error": error}, named=True)
    server.play(*[polite([event])] * 3)
    _, failure = await collect_run(Worker(models(protocol)), "hi")
    assert isinstance(failure, ModelError)
    assert said in str(failure)
    assert not failure.retryable
    assert len(server.requests) == 1


# =================================================================================================
# 15. An answer whose end the server did not state is interrupted
# =================================================================================================


def unstated_end(protocol: str) -> list[bytes]:
    """Text and a whole tool call, then the body ends (after ``[DONE]`` where the protocol has
    one) with no statement of the answer's end: what llama.cpp sends for an answer that a
    second request cut off."""
    text = text_so_far(protocol, "Adding.")
    arguments = '{"a": 2, "b": 3}'
    if protocol == "chat":
        call = {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "add", "arguments": arguments},
        }
        return [*text, *sse(chat_chunk({"tool_calls": [call]}), "[DONE]")]
    if protocol == "responses":
        call = {
            "id": "fc_1",
            "type": "function_call",
            "call_id": "call_1",
            "name": "add",
            "arguments": arguments,
        }
        return [
            *text,
            *sse(
                responses_event("response.output_item.added", output_index=1, item=call),
                responses_event("response.output_item.done", output_index=1, item=call),
                named=True,
            ),
            *sse("[DONE]"),
        ]
    if protocol == "gemini":  # a whole call, and no finishReason
        return [*text, *sse(gemini_chunk(gemini_call({"a": 2, "b": 3})))]
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {}}
    return [
        *text,
        *sse(
            anthropic_event("content_block_stop", index=0),
            anthropic_event("content_block_start", index=1, content_block=tool_use),
            anthropic_event(
                "content_block_delta",
                index=1,
                delta={"type": "input_json_delta", "partial_json": arguments},
            ),
            anthropic_event("content_block_stop", index=1),
            named=True,
        ),
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_answer_whose_end_the_server_never_stated_is_interrupted_and_its_calls_never_run(
    protocol: str, server: RawServer, models: Callable[..., Model]
) -> None:
    server.play(polite(unstated_end(protocol)), polite(text_answer(protocol, "Again.")))
    worker = Worker(models(protocol), tools=[add])
    with pytest.raises(ModelError) as caught:
        await worker.run("2 + 3?")
    assert CALLED == []
    answer = first_answer(caught.value.partial.items)
    assert (answer.text, answer.interrupted, answer.stop_reason) == ("Adding.", True, None)
    results = [i for i in caught.value.partial.items if isinstance(i, ToolResult)]
    assert all(r.status != "ok" for r in results)  # answered, never executed
    assert len(server.requests) == 1  # content had streamed: not re-generated
    assert (await worker.run("again")).output == "Again."
    assert CALLED == []


# =================================================================================================
# 17. SSE as the standard has it, over HTTP
# =================================================================================================


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_leading_byte_order_mark_keeps_the_first_events_text(
    protocol: str, server: RawServer, models: Callable[..., Model]
) -> None:
    events = text_answer(protocol, "First.")
    events[0] = b"\xef\xbb\xbf" + events[0]
    server.play(polite(events))
    result = await Worker(models(protocol)).run("hi")
    assert result.output == "First."


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_event_of_empty_data_is_skipped_not_an_error(
    protocol: str, server: RawServer, models: Callable[..., Model]
) -> None:
    events = text_answer(protocol, "Kept.")
    events[1:1] = [b"data:\n\n", b"data: \n\n", b"event: ping\ndata:\n\n"]
    server.play(polite(events))
    result = await Worker(models(protocol)).run("hi")
    assert result.output == "Kept."
    assert len(server.requests) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_event_beyond_the_size_cap_is_a_final_typed_error_not_an_unbounded_read(
    protocol: str, server: RawServer, models: Callable[..., Model]
) -> None:
    huge = b"data: " + json.dumps({"padding": "x" * 300_000}).encode()  # one line, no end yet
    server.play(*[script([stream_head(), *chunked(huge)], "keep")] * 3)
    worker = Worker(models(protocol, max_event_bytes=64 * 1024))
    with pytest.raises(EventTooLarge) as caught:
        await worker.run("hi")
    assert isinstance(caught.value, ModelError)
    assert not caught.value.retryable
    assert "65,536 bytes" in str(caught.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_event_just_under_the_size_cap_is_read(
    protocol: str, server: RawServer, models: Callable[..., Model]
) -> None:
    text = "y" * 60_000
    server.play(polite(text_answer(protocol, text)))
    result = await Worker(models(protocol, max_event_bytes=64 * 1024)).run("hi")
    assert result.output == text


# =================================================================================================
# 21. One call id for several calls
# =================================================================================================


def two_calls_with_one_id(protocol: str) -> list[bytes]:
    """A complete answer asking for add(1, 2) and add(3, 4), both under the id ``call_0``
    (compatible servers that number calls per response, or not at all)."""
    args = ['{"a": 1, "b": 2}', '{"a": 3, "b": 4}']
    if protocol == "chat":
        calls = [
            {
                "index": i,
                "id": "call_0",
                "type": "function",
                "function": {"name": "add", "arguments": a},
            }
            for i, a in enumerate(args)
        ]
        return sse(chat_chunk({"tool_calls": calls}), chat_chunk({}, "tool_calls"), "[DONE]")
    if protocol == "responses":
        items = [
            {
                "id": f"fc_{i}",
                "type": "function_call",
                "call_id": "call_0",
                "name": "add",
                "arguments": a,
            }
            for i, a in enumerate(args)
        ]
        added = [
            responses_event(kind, output_index=i, item=item)
            for i, item in enumerate(items)
            for kind in ("response.output_item.added", "response.output_item.done")
        ]
        done = responses_event(
            "response.completed", response=responses_envelope("completed", items)
        )
        return sse(*added, done, named=True)
    if protocol == "gemini":
        calls = [gemini_call(json.loads(a), call_id="call_0") for a in args]
        return sse(gemini_chunk(*calls, finish="STOP"))
    events: list[dict[str, Any]] = [ANTHROPIC_START]
    for i, a in enumerate(args):
        block = {"type": "tool_use", "id": "toolu_0", "name": "add", "input": {}}
        delta = {"type": "input_json_delta", "partial_json": a}
        events += [
            anthropic_event("content_block_start", index=i, content_block=block),
            anthropic_event("content_block_delta", index=i, delta=delta),
            anthropic_event("content_block_stop", index=i),
        ]
    events += [
        anthropic_event("message_delta", delta={"stop_reason": "tool_use"}),
        anthropic_event("message_stop"),
    ]
    return sse(*events, named=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_calls_that_share_one_id_in_a_response_all_run_under_distinct_ids(
    protocol: str, server: RawServer, models: Callable[..., Model]
) -> None:
    server.play(polite(two_calls_with_one_id(protocol)), polite(text_answer(protocol, "3, 7")))
    result = await Worker(models(protocol), tools=[add]).run("sums?")
    assert sorted(CALLED) == [(1, 2), (3, 4)]
    calls = [i for i in result.items if isinstance(i, ToolCall)]
    assert len({c.call_id for c in calls}) == 2
    assert result.output == "3, 7"
