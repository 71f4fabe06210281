"""Structured output (``output_type=``) on every provider, over real HTTP against the fake server.

Each provider is asked for its own native option (OpenAI Chat ``response_format``, Responses
``text.format``, Anthropic a forced final-answer tool); an answer that does not validate is sent
back to the model, a bounded number of times; a Stop mid-object keeps the object validated so far
(``Cancelled.partial.output_value``), and streaming consumers see it grow (`OutputDelta`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from llm_worker import Cancelled, ToolResult, Worker
from llm_worker.errors import OutputValidationError
from llm_worker.events import OutputDelta, TextDelta, ToolCallDelta
from llm_worker.items import Note, ToolCall
from llm_worker.models import (
    AnthropicModel,
    ModelRequest,
    OpenAIChatModel,
    OpenAIResponsesModel,
    RetryPolicy,
)
from llm_worker.models._client import HTTPModel
from llm_worker.models.gemini import GeminiModel
from llm_worker.output import partial_twin
from llm_worker.testing import FakeProviderServer, Reply, ScriptedModel, cancellation_sweep
from llm_worker.testing._scripted import Script

pytestmark = [
    pytest.mark.filterwarnings(
        r"ignore:Async generator '(openai|anthropic|httpx2|httpcore2)\._[\w.]+' was garbage "
        "collected:ResourceWarning"
    )
]


@pytest.fixture
def fake_server() -> Iterator[FakeProviderServer]:
    """A running fake provider server; no internal error and no connection left open after."""
    with FakeProviderServer() as server:
        yield server
        server.wait_for(lambda s: s.active_connections == 0, timeout=5.0)
    assert server.errors == []


FAST = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0)


class LineItem(BaseModel):
    name: str
    quantity: int


class Order(BaseModel):
    """An order the user placed."""

    customer: str
    items: list[LineItem]
    note: str | None = None


ORDER = {"customer": "Ada", "items": [{"name": "tea", "quantity": 2}], "note": None}
ORDER_JSON = json.dumps(ORDER)
# Cut inside the second item's name: customer and the first item are whole.
CUT_JSON = '{"customer": "Ada", "items": [{"name": "tea", "quantity": 2}, {"name": "sc'


@dataclass(frozen=True)
class Provider:
    """How one provider is reached on the fake server and how its answers are scripted."""

    name: str
    path: str
    make: Callable[[FakeProviderServer], HTTPModel]
    answer: Callable[..., Reply]  # (json text or pieces, **stream options) -> Reply


def _chat(server: FakeProviderServer) -> HTTPModel:
    return OpenAIChatModel("gpt-4o-mini", base_url=server.openai_base_url, api_key="k", retry=FAST)


def _responses(server: FakeProviderServer) -> HTTPModel:
    return OpenAIResponsesModel(
        "gpt-4o-mini", base_url=server.openai_base_url, api_key="k", retry=FAST
    )


def _anthropic(server: FakeProviderServer) -> HTTPModel:
    url = server.anthropic_base_url
    return AnthropicModel("claude-test", base_url=url, api_key="k", retry=FAST)


def _gemini(server: FakeProviderServer) -> HTTPModel:
    return GeminiModel("gemini-test", base_url=server.gemini_base_url, api_key="k", retry=FAST)


def _final_call(arguments: Any, **options: Any) -> Reply:
    return Reply.anthropic_tool_call("final_answer", arguments, **options)


PROVIDERS = [
    Provider("openai-chat", "/v1/chat/completions", _chat, Reply.openai_text),
    Provider("openai-responses", "/v1/responses", _responses, Reply.responses_text),
    Provider("anthropic", "/v1/messages", _anthropic, _final_call),
    Provider("gemini", FakeProviderServer.gemini_path("gemini-test"), _gemini, Reply.gemini_text),
]


@pytest.fixture(params=PROVIDERS, ids=lambda p: p.name)
def provider(request: pytest.FixtureRequest) -> Provider:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def model(fake_server: FakeProviderServer, provider: Provider) -> AsyncIterator[HTTPModel]:
    built = provider.make(fake_server)
    yield built
    await built.aclose()


def _bodies(server: FakeProviderServer, path: str) -> list[dict[str, Any]]:
    return [r.json for r in server.requests if r.path == path]


def _pieces(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# -- every provider ---------------------------------------------------------------------------


async def test_the_answer_is_a_validated_instance_and_the_request_asks_for_the_schema(
    fake_server: FakeProviderServer, provider: Provider, model: HTTPModel
) -> None:
    fake_server.enqueue(provider.answer(_pieces(ORDER_JSON)), path=provider.path)
    result = await Worker(model).run("Order two teas for Ada.", output_type=Order)

    assert result.output_value == Order.model_validate(ORDER)
    body = _bodies(fake_server, provider.path)[0]
    schema = Order.model_json_schema()
    if provider.name == "openai-chat":
        assert body["response_format"]["type"] == "json_schema"
        sent = body["response_format"]["json_schema"]
        assert sent["name"] == "Order"
        assert sent["strict"] is True
        assert set(sent["schema"]["properties"]) == set(schema["properties"])
        assert sent["schema"]["additionalProperties"] is False
        assert result.output == ORDER_JSON  # the text is kept
    elif provider.name == "openai-responses":
        fmt = body["text"]["format"]
        assert fmt["type"] == "json_schema"
        assert fmt["name"] == "Order"
        assert fmt["strict"] is True
        assert set(fmt["schema"]["properties"]) == set(schema["properties"])
    elif provider.name == "gemini":
        config = body["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert set(config["responseJsonSchema"]["properties"]) == set(schema["properties"])
        assert result.output == ORDER_JSON
    else:
        assert body["tool_choice"] == {"type": "any"}
        [final] = [t for t in body["tools"] if t["name"] == "final_answer"]
        assert set(final["input_schema"]["properties"]) == set(schema["properties"])
        # The call got its result: the history stays valid for the next request.
        results = [i for i in result.items if isinstance(i, ToolResult)]
        assert [(r.name, r.status) for r in results] == [("final_answer", "ok")]


async def test_an_invalid_answer_is_sent_back_and_the_retry_validates(
    fake_server: FakeProviderServer, provider: Provider, model: HTTPModel
) -> None:
    wrong = json.dumps({"customer": "Ada", "items": [{"name": "tea", "quantity": "two"}]})
    fake_server.enqueue(provider.answer(wrong), provider.answer(ORDER_JSON), path=provider.path)
    result = await Worker(model).run("Order two teas for Ada.", output_type=Order)

    assert result.output_value == Order.model_validate(ORDER)
    second = json.dumps(_bodies(fake_server, provider.path)[1])
    assert "items.0.quantity" in second  # the model was told what was wrong
    told = [i for i in result.items if isinstance(i, Note | ToolResult) and "quantity" in _said(i)]
    assert len(told) == 1


def _said(item: Note | ToolResult) -> str:
    return item.text if isinstance(item, Note) else item.content


async def test_a_stop_mid_object_keeps_the_object_validated_so_far(
    fake_server: FakeProviderServer, provider: Provider, model: HTTPModel
) -> None:
    pieces = _pieces(CUT_JSON, 5)
    head = {"openai-chat": 1, "openai-responses": 4, "anthropic": 2, "gemini": 0}[provider.name]
    fake_server.enqueue(provider.answer(pieces, stall_after=head + len(pieces)), path=provider.path)
    worker = Worker(model)
    seen: list[Any] = []
    arrived = 0
    with anyio.fail_after(10):
        async with worker.stream("Order for Ada.", output_type=Order) as run:
            async for event in run:
                if isinstance(event, OutputDelta):
                    seen.append(event.value)
                elif isinstance(event, TextDelta | ToolCallDelta):
                    arrived += 1
                    if arrived == len(pieces):  # all of it came; the server stalls now
                        run.cancel("the user pressed stop")
    error = run.error
    assert isinstance(error, Cancelled)
    partial = error.partial.output_value
    assert partial is not None
    assert partial.customer == "Ada"
    assert partial.items[0].name == "tea"
    assert partial.items[0].quantity == 2
    assert partial.items[1].name == "sc"
    assert partial.items[1].quantity is None
    assert isinstance(partial, partial_twin(Order))  # the second item is not whole yet
    # The deltas grew: the first had less than the last.
    assert len(seen) >= 2
    assert seen[0] != seen[-1]
    # The worker is ready again, and the next request is valid (every call answered).
    fake_server.enqueue(provider.answer(ORDER_JSON), path=provider.path)
    again = await worker.run("Again.", output_type=Order)
    assert again.output_value == Order.model_validate(ORDER)


async def test_retries_are_bounded_and_end_with_a_typed_error(
    fake_server: FakeProviderServer, provider: Provider, model: HTTPModel
) -> None:
    bad = json.dumps({"customer": "Ada"})
    fake_server.enqueue(*(provider.answer(bad) for _ in range(2)), path=provider.path)
    worker = Worker(model, output_type=Order, output_retries=1)
    with pytest.raises(OutputValidationError, match="did not match Order after 2 attempts"):
        await worker.run("Order.")
    assert len(_bodies(fake_server, provider.path)) == 2
    fake_server.enqueue(provider.answer(ORDER_JSON), path=provider.path)
    assert (await worker.run("Again.")).output_value == Order.model_validate(ORDER)


# -- in-process models ------------------------------------------------------------------------


async def test_the_offline_model_answers_with_json_made_from_the_schema() -> None:
    from llm_worker.models import OfflineModel

    worker = Worker(OfflineModel(pace=0), output_type=Order)
    result = await worker.run('An order for "Ada": 3 teas')
    assert isinstance(result.output_value, Order)
    assert result.output_value.customer == "Ada"


async def test_a_type_that_is_not_a_model_is_wrapped_and_unwrapped() -> None:
    model = ScriptedModel(['{"value": [3, 1, 2]}'])
    result = await Worker(model).run("Numbers?", output_type=list[int])
    assert result.output_value == [3, 1, 2]
    assert model.requests[0].output is not None
    assert model.requests[0].output.schema["required"] == ["value"]


async def test_a_code_fence_around_the_json_is_tolerated() -> None:
    model = ScriptedModel([f"```json\n{ORDER_JSON}\n```"])
    result = await Worker(model).run("Order.", output_type=Order)
    assert result.output_value == Order.model_validate(ORDER)


async def test_the_final_answer_tool_ends_the_run_and_other_calls_are_answered_not_run() -> None:
    model = ScriptedModel(
        [Script.tool_calls(("lookup", {"q": "x"}), ("final_answer", ORDER))], native_output=False
    )
    ran: list[str] = []

    def lookup(q: str) -> str:
        ran.append(q)
        return q

    result = await Worker(model, tools=[lookup]).run("Order.", output_type=Order)
    assert result.output_value == Order.model_validate(ORDER)
    assert ran == []
    statuses = {i.name: i.status for i in result.items if isinstance(i, ToolResult)}
    assert statuses == {"final_answer": "ok", "lookup": "skipped"}
    tools = [spec.name for spec in model.requests[0].tools]
    assert tools == ["lookup", "final_answer"]


async def test_a_tool_mode_answer_in_plain_text_is_accepted_when_it_validates() -> None:
    model = ScriptedModel([ORDER_JSON], native_output=False)
    result = await Worker(model).run("Order.", output_type=Order)
    assert result.output_value == Order.model_validate(ORDER)


async def test_a_stop_in_tool_mode_keeps_the_partial_arguments() -> None:
    model = ScriptedModel(
        [Script.tool_calls(("final_answer", CUT_JSON), fragments=3, then_hang=True)],
        native_output=False,
    )
    worker = Worker(model)
    arrived = 0
    with anyio.fail_after(10):
        async with worker.stream("Order.", output_type=Order) as run:
            async for event in run:
                if isinstance(event, ToolCallDelta):
                    arrived += 1
                    if arrived == 3:
                        run.cancel("stop")
    assert isinstance(run.error, Cancelled)
    partial = run.error.partial.output_value
    assert partial.customer == "Ada"
    assert partial.items[1].name == "sc"
    calls = [i for i in run.error.partial.items if isinstance(i, ToolCall)]
    assert [c.complete for c in calls] == [False]  # cut off: never run
    results = [i for i in run.error.partial.items if isinstance(i, ToolResult)]
    assert [r.call_id for r in results] == [calls[0].call_id]


async def test_a_worker_without_output_type_is_unchanged() -> None:
    model = ScriptedModel(["plain"])
    result = await Worker(model).run("hi")
    assert result.output_value is None
    assert result.output == "plain"
    assert model.requests[0].output is None


async def test_a_tool_named_like_the_final_answer_tool_is_refused() -> None:
    def final_answer() -> str:
        return ""

    worker = Worker(ScriptedModel(["{}"], native_output=False), tools=[final_answer])
    with pytest.raises(Exception, match="final-answer tool"):
        await worker.run("x", output_type=Order)


def test_a_type_without_a_json_schema_fails_at_construction() -> None:
    with pytest.raises(Exception, match="schema"):
        Worker(ScriptedModel(), output_type=Callable[[], int])


def test_partial_validation_gives_the_real_type_once_the_json_validates() -> None:
    from llm_worker.output import output_schema

    schema = output_schema(Order)
    assert schema.partial(ORDER_JSON[:-1]) == Order.model_validate(ORDER)
    assert schema.partial("") is None
    early = schema.partial('{"cust')
    assert early is not None
    assert early.customer is None


# -- a Stop at every await -----------------------------------------------------------------------


def _answers(request: ModelRequest) -> Script:
    """A first answer that fails validation, then (once told) a good one, in several chunks."""
    told = any(isinstance(item, Note) for item in request.history)
    return Script.text(ORDER_JSON if told else '{"customer": "Ada"}', chunks=6)


def _final_calls(request: ModelRequest) -> Script:
    return Script.tool_calls(("lookup", {"q": "tea"}), ("final_answer", ORDER), fragments=3)


def _check_partial(worker: Worker, outcome: object) -> None:
    value = getattr(getattr(outcome, "partial", outcome), "output_value", None)
    assert value is None or isinstance(value, Order | partial_twin(Order)), value


@pytest.mark.parametrize("native", [True, False], ids=["native", "tool"])
async def test_a_stop_at_every_await_keeps_every_invariant(native: bool) -> None:
    def lookup(q: str) -> str:
        return q

    def make() -> Worker:
        model = ScriptedModel([_answers if native else _final_calls] * 64, native_output=native)
        return Worker(model, tools=[lookup], output_type=Order)

    report = await cancellation_sweep(make, "Order.", check=_check_partial)
    report.raise_for_violations()
    assert report.runs > 0


def test_anthropic_with_thinking_leaves_the_tool_choice_to_the_model() -> None:
    from llm_worker.output import output_schema

    model = AnthropicModel("m", api_key="k", thinking={"type": "enabled", "budget_tokens": 1024})
    spec = output_schema(Order).spec("tool")
    body = model.request_params(ModelRequest(history=(), output=spec))
    assert "tool_choice" not in body


async def test_a_fallback_with_a_model_without_native_output_uses_the_tool_everywhere(
    fake_server: FakeProviderServer,
) -> None:
    from llm_worker.models import FallbackModel

    chat = _chat(fake_server)
    scripted = ScriptedModel(native_output=False)
    fake_server.enqueue(Reply.openai_text("not an answer"), path="/v1/chat/completions")
    fake_server.enqueue(Reply.openai_text(ORDER_JSON), path="/v1/chat/completions")
    async with FallbackModel(chat, scripted) as model:
        result = await Worker(model).run("Order.", output_type=Order)
    assert result.output_value == Order.model_validate(ORDER)  # the text answer, on a retry
    body = _bodies(fake_server, "/v1/chat/completions")[0]
    assert "response_format" not in body
    assert [t["function"]["name"] for t in body["tools"]] == ["final_answer"]
