"""Request bodies: built once per history group, equal to the provider's `request_params`, sent as
they are, and built without freezing the event loop."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_worker import Worker
from llm_worker.history import repair
from llm_worker.items import (
    AssistantMessage,
    Item,
    Note,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolResult,
    UserMessage,
)
from llm_worker.models import (
    AnthropicModel,
    GeminiModel,
    ModelRequest,
    OpenAIChatModel,
    OpenAIResponsesModel,
)
from llm_worker.models._client import HTTPModel
from llm_worker.models._request import BodyBuilder, Group, HistoryConversion
from llm_worker.testing import FakeProviderServer, Reply


def models() -> list[HTTPModel]:
    return [
        OpenAIChatModel("m", api_key="k", extra_body={"top_k": 3}),
        OpenAIResponsesModel("m", api_key="k"),
        AnthropicModel("m", api_key="k"),
        GeminiModel("m", api_key="k"),
    ]


async def body_of(model: HTTPModel, request: ModelRequest, builder: BodyBuilder) -> dict[str, Any]:
    body = await builder.build(
        model.request_options(request),
        model.history_key,
        request.history,
        model.conversion(request),
    )
    decoded: dict[str, Any] = json.loads(body)
    return decoded


_parts = st.one_of(
    st.builds(TextPart, text=st.text(max_size=6)),
    st.builds(
        ReasoningPart,
        text=st.text(max_size=4),
        signature=st.none() | st.just("sig"),
        encrypted_content=st.none() | st.just("enc"),
        provider=st.sampled_from([None, "anthropic", "openai-responses", "gemini"]),
    ),
)
_ids = st.sampled_from(["a", "b", "c.d", ""])
_items = st.one_of(
    st.builds(UserMessage, text=st.text(max_size=5)),
    st.builds(Note, text=st.text(max_size=5)),
    st.builds(
        AssistantMessage, parts=st.lists(_parts, max_size=3).map(tuple), interrupted=st.booleans()
    ),
    st.builds(
        ToolCall,
        call_id=_ids,
        name=st.just("f"),
        arguments=st.none() | st.just({"x": "é"}),
        complete=st.booleans(),
        provider_id=st.none() | st.just("fc_1") | st.just("gemini-thought-signature:sig"),
    ),
    st.builds(ToolResult, call_id=_ids, name=st.just("f"), content=st.text(max_size=4)),
)


@settings(max_examples=150, deadline=None)
@given(
    history=st.lists(_items, max_size=14),
    cut=st.integers(min_value=0, max_value=14),
    other=st.lists(_items, max_size=4),
    system=st.none() | st.just("be brief"),
)
def test_the_body_sent_is_exactly_the_request_params(
    history: list[Item], cut: int, other: list[Item], system: str | None
) -> None:
    """What a builder remembers changes the cost of a body, never the body: built from scratch,
    again, after a shorter history it continues, and after one that shares its start and then
    parts from it, it is what `request_params` says, for any history and every provider."""
    full = tuple(repair(history))
    shorter = ModelRequest(history=full[:cut], system=system)
    sibling = ModelRequest(
        history=tuple(repair([*full[:cut], *other])) if other else full[:cut], system=system
    )
    request = ModelRequest(history=full, system=system)
    for model in models():
        builder = BodyBuilder()
        expected = model.request_params(request)
        assert anyio.run(body_of, model, request, builder) == expected
        assert anyio.run(body_of, model, request, builder) == expected
        continued = BodyBuilder()
        anyio.run(body_of, model, shorter, continued)
        assert anyio.run(body_of, model, request, continued) == expected
        parted = BodyBuilder()  # the same start, then other items (a retry with other input)
        anyio.run(body_of, model, sibling, parted)
        assert anyio.run(body_of, model, request, parted) == expected


class CountingConversion:
    """A provider's conversion that counts the groups it was asked to convert."""

    def __init__(self, inner: HistoryConversion) -> None:
        self.inner = inner
        self.converted = 0

    def groups(self, history: Sequence[Item], start: int = 0) -> Any:
        return self.inner.groups(history, start)

    def convert(self, group: Group) -> list[dict[str, Any]]:
        self.converted += 1
        return self.inner.convert(group)

    def opening(self, first: Group | None) -> list[dict[str, Any]]:
        return self.inner.opening(first)


def conversation(turns: int) -> list[Item]:
    items: list[Item] = []
    for n in range(turns):
        call = ToolCall(call_id=f"c{n}", name="f", arguments={"n": n}, raw_arguments="{}")
        items += [
            UserMessage(text=f"question {n}"),
            AssistantMessage(parts=(TextPart(text=f"answer {n}"),)),
            call,
            ToolResult(call_id=call.call_id, name="f", content=f"result {n}"),
        ]
    return items


@pytest.mark.parametrize("model", models(), ids=lambda m: m.provider)
async def test_a_turn_converts_only_what_was_added_since_the_last(model: HTTPModel) -> None:
    history = conversation(250)
    builder = BodyBuilder()
    first = CountingConversion(model.conversion(ModelRequest(history=())))
    await builder.build({}, "messages", history, first)
    assert first.converted >= 250
    history += [UserMessage(text="one more"), AssistantMessage(parts=(TextPart(text="ok"),))]
    second = CountingConversion(first.inner)
    await builder.build({}, "messages", history, second)
    assert second.converted <= 3  # the new items, and the last group if they extend it
    other = conversation(5)  # another conversation on the same model: converted whole
    third = CountingConversion(first.inner)
    await builder.build({}, "messages", other, third)
    assert third.converted >= 5
    history.append(UserMessage(text="and the first conversation goes on"))
    fourth = CountingConversion(first.inner)
    await builder.build({}, "messages", history, fourth)
    assert fourth.converted <= 2
    retried = [*history[:-1], UserMessage(text="the same turn, asked otherwise")]
    fifth = CountingConversion(first.inner)
    await builder.build({}, "messages", retried, fifth)
    assert fifth.converted <= 3  # it parts from the last body at its end: only that is new


async def test_building_a_long_history_lets_the_loop_run_and_can_be_cancelled() -> None:
    """10,000 items, nothing cached: other tasks run while it is built, and a cancel lands at
    one of its checkpoints (it does not wait for the whole build)."""
    model = OpenAIChatModel("m", api_key="k")
    history = conversation(2500)
    conversion = CountingConversion(model.conversion(ModelRequest(history=())))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        group.start_soon(ticker)
        await anyio.lowlevel.checkpoint()
        await BodyBuilder().build({}, "messages", history, conversion)
        group.cancel_scope.cancel()
    assert ticks >= 100  # a checkpoint every quarter millisecond of 7,500 groups' work

    conversion.converted = 0
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:

            async def cancel_soon() -> None:
                await anyio.lowlevel.checkpoint()
                scope.cancel()

            group.start_soon(cancel_soon)
            await BodyBuilder().build({}, "messages", history, conversion)
    assert scope.cancelled_caught
    assert conversion.converted < 500  # stopped at an early checkpoint, not at the end


@pytest.mark.parametrize(
    ("make", "reply", "path"),
    [
        (
            lambda url: OpenAIChatModel("m", api_key="k", base_url=url + "/v1"),
            Reply.openai_text("hi"),
            "/v1/chat/completions",
        ),
        (
            lambda url: OpenAIResponsesModel("m", api_key="k", base_url=url + "/v1"),
            Reply.responses_text("hi"),
            "/v1/responses",
        ),
        (
            lambda url: AnthropicModel("m", api_key="k", base_url=url),
            Reply.anthropic_text("hi"),
            "/v1/messages",
        ),
        (
            lambda url: GeminiModel("m", api_key="k", base_url=url),
            Reply.gemini_text("hi"),
            FakeProviderServer.gemini_path("m"),
        ),
    ],
    ids=["chat", "responses", "anthropic", "gemini"],
)
async def test_what_the_server_receives_is_the_request_params_over_the_wire(
    make: Any, reply: Reply, path: str
) -> None:
    async with FakeProviderServer(default=reply) as server:
        model = make(server.base_url)
        worker = Worker(model, history=conversation(3), system="sys")
        await worker.run("and now?")
        await worker.run("and then?")
        await model.aclose()
        sent = [r for r in server.requests if r.path == path]
    assert len(sent) == 2
    last = ModelRequest(history=tuple(worker.history[:-1]), system="sys")  # but its answer
    assert sent[-1].json == model.request_params(last)
    assert sent[-1].headers.get("content-type") == "application/json"
