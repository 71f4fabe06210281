"""`FallbackModel` over real HTTP: a primary that fails before content hands over to the next
model (and the message says which answered); a failure after content keeps what streamed, with
no switch mid-answer; a Stop at any await leaves nothing open."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from llm_worker import Cancelled, ModelError, Worker
from llm_worker.events import AnsweredBy, Retrying, TextDelta
from llm_worker.items import AssistantMessage
from llm_worker.models import AnthropicModel, FallbackModel, OpenAIChatModel, RetryPolicy
from llm_worker.testing import FakeProviderServer, Reply, ScriptedModel, cancellation_sweep
from llm_worker.testing._scripted import Script

pytestmark = [
    pytest.mark.filterwarnings(
        r"ignore:Async generator '(openai|anthropic|httpx2|httpcore2)\._[\w.]+' was garbage "
        "collected:ResourceWarning"
    )
]

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture
def fake_server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as server:
        yield server
        server.wait_for(lambda s: s.active_connections == 0, timeout=5.0)
    assert server.errors == []


@pytest.fixture
async def fallback(fake_server: FakeProviderServer) -> AsyncIterator[FallbackModel]:
    primary = OpenAIChatModel(
        "gpt-primary", base_url=fake_server.openai_base_url, api_key="k", retry=ONCE
    )
    secondary = AnthropicModel(
        "claude-secondary", base_url=fake_server.anthropic_base_url, api_key="k", retry=ONCE
    )
    async with FallbackModel(primary, secondary) as model:
        yield model


def _answer(items: tuple[object, ...]) -> AssistantMessage:
    [message] = [i for i in items if isinstance(i, AssistantMessage)]
    return message


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_primary_failing_before_content_hands_over_to_the_secondary(
    fake_server: FakeProviderServer, fallback: FallbackModel, status: int
) -> None:
    fake_server.enqueue(Reply.error(status), path=CHAT)
    fake_server.enqueue(Reply.anthropic_text("From the secondary."), path=MESSAGES)
    events = []
    async with Worker(fallback).stream("hi") as run:
        async for event in run:
            events.append(event)
    result = run.result
    assert result is not None
    message = _answer(result.items)
    assert message.text == "From the secondary."
    assert message.model == "anthropic:claude-secondary"
    [switch] = [e for e in events if isinstance(e, Retrying)]
    assert "falling back to anthropic:claude-secondary" in switch.error
    assert [e.model for e in events if isinstance(e, AnsweredBy)] == ["anthropic:claude-secondary"]


async def test_the_primary_answers_when_it_can_and_is_named(
    fake_server: FakeProviderServer, fallback: FallbackModel
) -> None:
    fake_server.enqueue(Reply.openai_text("From the primary."), path=CHAT)
    result = await Worker(fallback).run("hi")
    assert _answer(result.items).model == "openai:gpt-primary"
    assert [r.path for r in fake_server.requests] == [CHAT]


async def test_a_failure_after_content_keeps_what_streamed_and_does_not_switch(
    fake_server: FakeProviderServer, fallback: FallbackModel
) -> None:
    fake_server.enqueue(Reply.openai_text(["Half ", "an ", "answer"], drop_after=3), path=CHAT)
    worker = Worker(fallback)
    with pytest.raises(ModelError) as caught:
        await worker.run("hi")
    message = _answer(caught.value.partial.items)
    assert message.text == "Half an "
    assert message.interrupted
    assert message.model == "openai:gpt-primary"
    assert [r.path for r in fake_server.requests] == [CHAT]  # no second answer spliced on
    fake_server.enqueue(Reply.openai_text("ok"), path=CHAT)
    assert (await worker.run("again")).output == "ok"


async def test_a_permanent_error_is_not_a_reason_to_fall_back(
    fake_server: FakeProviderServer, fallback: FallbackModel
) -> None:
    fake_server.enqueue(Reply.error(400), path=CHAT)
    with pytest.raises(ModelError):
        await Worker(fallback).run("hi")
    assert [r.path for r in fake_server.requests] == [CHAT]


async def test_the_last_models_failure_is_raised(
    fake_server: FakeProviderServer, fallback: FallbackModel
) -> None:
    fake_server.enqueue(Reply.error(500), path=CHAT)
    fake_server.enqueue(Reply.error(529), path=MESSAGES)
    with pytest.raises(ModelError) as caught:
        await Worker(fallback).run("hi")
    assert caught.value.status_code == 529


async def test_a_stop_while_the_secondary_streams_keeps_its_text_and_closes_everything(
    fake_server: FakeProviderServer, fallback: FallbackModel
) -> None:
    fake_server.enqueue(Reply.error(503), path=CHAT)
    fake_server.enqueue(Reply.anthropic_text(["One ", "two"], stall_after=5), path=MESSAGES)
    worker = Worker(fallback)
    with anyio.fail_after(10):
        async with worker.stream("hi") as run:
            async for event in run:
                if isinstance(event, TextDelta):
                    run.cancel("stop")
    assert isinstance(run.error, Cancelled)
    message = _answer(run.error.partial.items)
    assert message.text.startswith("One")
    assert message.model == "anthropic:claude-secondary"


async def test_a_stop_while_waiting_for_the_primary_stops_the_run() -> None:
    primary = ScriptedModel([Script.text("never").hanging(after=0)], name="primary")
    secondary = ScriptedModel(["unused"], name="secondary")
    worker = Worker(FallbackModel(primary, secondary))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_soon, worker)
            with pytest.raises(Cancelled):
                await worker.run("hi")
    assert secondary.remaining == 1  # a stop is not a failure: no fall back


async def _cancel_soon(worker: Worker) -> None:
    while not worker.running:
        await anyio.sleep(0.01)
    await anyio.sleep(0.05)
    worker.cancel("stop")


def test_spec_strings_are_resolved_and_one_model_is_refused() -> None:
    model = FallbackModel("offline", "offline:reasoning")
    assert model.name == "offline"
    assert model.native_output is True
    with pytest.raises(ValueError, match="at least one"):
        FallbackModel("offline")


async def test_a_stop_at_every_await_of_a_fallback_keeps_every_invariant() -> None:
    """The primary fails (retryable, before content), the secondary answers; cancelled at each
    await point of that, every invariant holds and the worker goes on."""

    def make() -> Worker:
        failing = Script.error(ModelError("overloaded", retryable=True))
        primary = ScriptedModel([failing] * 64, name="primary")
        secondary = ScriptedModel([Script.text("From the secondary.", chunks=4)] * 64)
        return Worker(FallbackModel(primary, secondary))

    report = await cancellation_sweep(make, "hi")
    report.raise_for_violations()
    assert report.runs > 0
