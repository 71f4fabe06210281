"""Usage as the server reported it: unknown is not zero, and what was reported is counted even
when the answer is cut off. Over real loopback HTTP, on every protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from llm_worker import ModelError, Worker
from llm_worker.events import UsageUpdate
from llm_worker.items import AssistantMessage, Usage

from .raw_server import LAST_CHUNK, RawServer, chunked, script, sse, stream_head
from .test_anthropic import collect_run
from .test_hostile_wire import (
    ANTHROPIC_START,
    PROTOCOLS,
    Model,
    anthropic_event,
    chat_chunk,
    gemini_chunk,
    make_model,
    responses_event,
    text_so_far,
)


@pytest.fixture
def server() -> Iterator[RawServer]:
    with RawServer() as running:
        yield running


@pytest.fixture
async def models(server: RawServer) -> AsyncIterator[Callable[..., Model]]:
    made: list[Model] = []

    def factory(protocol: str, **options: Any) -> Model:
        made.append(make_model(protocol, server, **options))
        return made[-1]

    yield factory
    for model in made:
        await model.aclose()


def answer_with_usage(protocol: str, usage: dict[str, Any] | None) -> list[bytes]:
    """A complete answer "Hi." whose only usage report is ``usage`` (None: no report at all),
    in the protocol's own field names."""
    if protocol == "chat":
        extra = [{"id": "c1", "choices": [], "usage": usage}] if usage is not None else []
        return sse(chat_chunk({"content": "Hi."}), chat_chunk({}, "stop"), *extra, "[DONE]")
    if protocol == "gemini":
        return sse(gemini_chunk({"text": "Hi."}, finish="STOP", usage=usage))
    if protocol == "responses":
        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi."}],
        }
        done = {"id": "r1", "status": "completed", "output": [message], "usage": usage}
        return sse(
            responses_event("response.output_item.added", output_index=0, item=message),
            responses_event("response.output_item.done", output_index=0, item=message),
            responses_event("response.completed", response=done),
            named=True,
        )
    start: dict[str, Any] = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    if usage is not None:
        start["usage"] = usage
    return sse(
        anthropic_event("message_start", message=start),
        anthropic_event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        anthropic_event(
            "content_block_delta", index=0, delta={"type": "text_delta", "text": "Hi."}
        ),
        anthropic_event("content_block_stop", index=0),
        anthropic_event("message_delta", delta={"stop_reason": "end_turn"}),
        anthropic_event("message_stop"),
        named=True,
    )


def only_answer(items: Any) -> AssistantMessage:
    [message] = [i for i in items if isinstance(i, AssistantMessage)]
    return message


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_usage_a_server_never_reports_is_unknown_not_zero(
    protocol: str, server: RawServer, models: Callable[..., Model]
) -> None:
    server.play(script([stream_head(), *chunked(*answer_with_usage(protocol, None)), LAST_CHUNK]))
    result = await Worker(models(protocol)).run("hi")
    message = only_answer(result.items)
    assert message.text == "Hi."
    assert message.usage is not None
    assert not message.usage.known  # every count None: "0 tokens" would be a lie
    assert message.usage == Usage(input_tokens=None, output_tokens=None)
    assert not result.usage.known


NAMES = {
    "chat": ("prompt_tokens", "completion_tokens"),
    "responses": ("input_tokens", "output_tokens"),
    "anthropic": ("input_tokens", "output_tokens"),
    "gemini": ("promptTokenCount", "candidatesTokenCount"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_counts_a_server_leaves_out_are_unknown_not_zero(
    protocol: str, server: RawServer, models: Callable[..., Model]
) -> None:
    """A server that gives input and output counts only: reasoning and cache reads are not 0."""
    given, made = NAMES[protocol]
    events = answer_with_usage(protocol, {given: 12, made: 3})
    server.play(script([stream_head(), *chunked(*events), LAST_CHUNK]))
    result = await Worker(models(protocol)).run("hi")
    expected = Usage(input_tokens=12, output_tokens=3)
    assert (expected.reasoning_tokens, expected.cache_read_tokens) == (None, None)
    assert only_answer(result.items).usage == expected
    assert result.usage == expected


@pytest.mark.parametrize("protocol", ["chat", "anthropic", "gemini"])
async def test_usage_reported_before_a_cut_is_counted_with_the_interrupted_text(
    protocol: str, server: RawServer, models: Callable[..., Model]
) -> None:
    """The server said what the request used, streamed some text, and the connection broke:
    the interrupted answer and the run still count what the server reported."""
    if protocol == "chat":  # vLLM's continuous usage stats: usage on every chunk
        usage = {"prompt_tokens": 7, "completion_tokens": 1}
        events = sse(chat_chunk({"role": "assistant", "content": "Partial"}, usage=usage))
    else:
        events = text_so_far(protocol, "Partial")  # message_start carries input 7, output 1
    server.play(script([stream_head(), *chunked(*events)], "rst", linger=0.05))
    with pytest.raises(ModelError) as caught:
        await Worker(models(protocol)).run("hi")
    message = only_answer(caught.value.partial.items)
    assert (message.text, message.interrupted) == ("Partial", True)
    assert message.usage is not None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 1)
    assert caught.value.partial.usage.input_tokens == 7


async def test_usage_reported_before_a_final_failure_reaches_the_caller(
    server: RawServer, models: Callable[..., Model]
) -> None:
    """Anthropic reports the input tokens in ``message_start``; an error event that ends the
    stream before any content does not make the model layer drop that report."""
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}
    events = sse(ANTHROPIC_START, error, named=True)
    server.play(script([stream_head(), *chunked(*events), LAST_CHUNK]))
    streamed, failure = await collect_run(Worker(models("anthropic")), "hi")
    assert isinstance(failure, ModelError)
    [update] = [e for e in streamed if isinstance(e, UsageUpdate)]
    assert (update.usage.input_tokens, update.usage.output_tokens) == (7, 1)
