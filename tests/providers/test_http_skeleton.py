"""The skeleton the three HTTP providers share (`HTTPModel`): one client policy, one closing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import anthropic
import openai
import pytest

from llm_worker import Worker
from llm_worker.errors import ModelError
from llm_worker.models import RetryPolicy, openai_responses
from llm_worker.models import anthropic as anthropic_module
from llm_worker.models._client import HTTPModel
from llm_worker.models._translate import MalformedStream
from llm_worker.models.anthropic import AnthropicModel
from llm_worker.models.openai_chat import OpenAIChatModel
from llm_worker.models.openai_responses import OpenAIResponsesModel
from llm_worker.testing import FakeProviderServer, Reply

pytestmark = pytest.mark.anyio

TWO_ATTEMPTS = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05)


def _chat(server: FakeProviderServer, client: Any) -> HTTPModel:
    return OpenAIChatModel("m", client=client, retry=TWO_ATTEMPTS)


def _responses(server: FakeProviderServer, client: Any) -> HTTPModel:
    return OpenAIResponsesModel("gpt-4o", client=client, retry=TWO_ATTEMPTS)


def _anthropic(server: FakeProviderServer, client: Any) -> HTTPModel:
    return AnthropicModel("claude", client=client, retry=TWO_ATTEMPTS)


def _openai_client(server: FakeProviderServer) -> Any:
    return openai.AsyncOpenAI(api_key="k", base_url=server.openai_base_url, max_retries=5)


def _anthropic_client(server: FakeProviderServer) -> Any:
    return anthropic.AsyncAnthropic(api_key="k", base_url=server.anthropic_base_url, max_retries=5)


PROVIDERS = [
    pytest.param(_chat, _openai_client, "/v1/chat/completions", id="openai-chat"),
    pytest.param(_responses, _openai_client, "/v1/responses", id="openai-responses"),
    pytest.param(_anthropic, _anthropic_client, "/v1/messages", id="anthropic"),
]


@pytest.mark.parametrize(("make_model", "make_client", "path"), PROVIDERS)
async def test_a_callers_client_never_retries_on_its_own_under_our_retries(
    fake_server: FakeProviderServer,
    make_model: Callable[[FakeProviderServer, Any], HTTPModel],
    make_client: Callable[[FakeProviderServer], Any],
    path: str,
) -> None:
    """A caller's client with ``max_retries=5``: two attempts of ours are two requests, not
    2 × 6 (the SDK's retries nested in ours, unseen and not cancellable as a run's back-off)."""
    own = make_client(fake_server)
    model = make_model(fake_server, own)
    fake_server.enqueue(*[Reply.error(503)] * 2, path=path)
    try:
        with pytest.raises(ModelError, match="503"):
            await Worker(model).run("hi")
    finally:
        await model.aclose()
        assert not own.is_closed()  # the caller's to close
        assert own.max_retries == 5  # and never changed
        await own.close()
    assert len([r for r in fake_server.requests if r.path == path]) == 2


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: OpenAIChatModel("m", api_key="k", base_url="http://127.0.0.1:9/v1"),
        lambda: OpenAIResponsesModel("m", api_key="k", base_url="http://127.0.0.1:9/v1"),
        lambda: AnthropicModel("m", api_key="k", base_url="http://127.0.0.1:9"),
    ],
    ids=["openai-chat", "openai-responses", "anthropic"],
)
async def test_every_http_model_closes_the_client_it_built_when_its_async_with_ends(
    make_model: Callable[[], HTTPModel],
) -> None:
    async with make_model() as model:
        assert isinstance(model, HTTPModel)
        assert not model.client.is_closed()
    assert model.client.is_closed()


async def _translated(translate_stream: Any, payloads: list[dict[str, Any]]) -> list[Any]:
    async def source() -> AsyncIterator[dict[str, Any]]:
        for payload in payloads:
            yield payload

    async with aclosing(source()) as chunks, aclosing(translate_stream(chunks)) as events:
        return [event async for event in events]


async def test_a_terminal_event_of_the_wrong_shape_is_an_error_not_a_complete_answer() -> None:
    """`response.completed` without its response: a malformed stream, never an answer that
    "stands" with no stop reason (one loop, `translate`, decides how every stream ends)."""
    with pytest.raises(MalformedStream, match="malformed stream event"):
        await _translated(openai_responses.translate_stream, [{"type": "response.completed"}])


async def test_a_malformed_event_after_the_stop_reason_is_still_an_error() -> None:
    payloads = [
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
        {"type": "content_block_stop", "index": 3},
    ]
    with pytest.raises(MalformedStream, match="not open"):
        await _translated(anthropic_module.translate_stream, payloads)
