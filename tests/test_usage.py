"""Usage of a run stopped mid-answer, over real HTTP: what the server reported before the Stop is
counted with the interrupted text; what it never reported is unknown (None), never zero, and
the result says so (`RunResult.usage_known`)."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from llm_worker import Cancelled, Worker
from llm_worker.events import TextDelta
from llm_worker.items import AssistantMessage, Usage
from llm_worker.models import AnthropicModel, OpenAIChatModel, RetryPolicy
from llm_worker.models._client import HTTPModel
from llm_worker.result import RunResult
from llm_worker.testing import FakeProviderServer, Reply, ScriptedModel

pytestmark = [
    pytest.mark.filterwarnings(
        r"ignore:Async generator '(openai|anthropic|httpx2|httpcore2)\._[\w.]+' was garbage "
        "collected:ResourceWarning"
    )
]


@pytest.fixture
def fake_server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as server:
        yield server
        server.wait_for(lambda s: s.active_connections == 0, timeout=5.0)
    assert server.errors == []


async def _stopped_at_first_text(model: HTTPModel) -> Cancelled:
    worker = Worker(model)
    with anyio.fail_after(10):
        async with worker.stream("hi") as run:
            async for event in run:
                if isinstance(event, TextDelta):
                    run.cancel("stop")
    assert isinstance(run.error, Cancelled)
    return run.error


async def test_a_stop_keeps_the_usage_anthropic_reported_at_the_start(
    fake_server: FakeProviderServer,
) -> None:
    fake_server.enqueue(Reply.anthropic_text(["One ", "two"], stall_after=4), path="/v1/messages")
    async with AnthropicModel(
        "claude-test", base_url=fake_server.anthropic_base_url, api_key="k"
    ) as model:
        error = await _stopped_at_first_text(model)
    [message] = [i for i in error.partial.items if isinstance(i, AssistantMessage)]
    assert message.interrupted
    assert message.usage == Usage(input_tokens=8, output_tokens=1)
    assert error.partial.usage == Usage(input_tokens=8, output_tokens=1)
    assert error.partial.usage_known


async def test_a_stop_before_a_chat_server_reports_usage_leaves_it_unknown_not_zero(
    fake_server: FakeProviderServer,
) -> None:
    fake_server.enqueue(
        Reply.openai_text(["One ", "two"], stall_after=2), path="/v1/chat/completions"
    )
    async with OpenAIChatModel(
        "gpt-test", base_url=fake_server.openai_base_url, api_key="k", retry=RetryPolicy(1)
    ) as model:
        error = await _stopped_at_first_text(model)
    [message] = [i for i in error.partial.items if isinstance(i, AssistantMessage)]
    assert message.text == "One "
    assert message.usage is not None
    assert not message.usage.known  # the server would have told at the end: unknown, not 0
    assert error.partial.usage.input_tokens is None
    assert not error.partial.usage_known


def test_usage_known_needs_every_response_counted() -> None:
    counted = AssistantMessage(usage=Usage(input_tokens=3, output_tokens=2))
    unknown = AssistantMessage(usage=Usage())
    assert RunResult(status="finished", items=(counted,)).usage_known
    assert not RunResult(status="finished", items=(counted, unknown)).usage_known
    assert RunResult(status="finished").usage_known  # no response: nothing unknown


async def test_a_run_sums_known_counts_and_keeps_unknown_ones_unknown() -> None:
    result = await Worker(ScriptedModel(["Hello there."])).run("hi")
    assert result.usage.input_tokens is not None
    assert result.usage.reasoning_tokens is None  # never reported: not 0
