"""Runs on Temporal, stopped from another process: what the caller gets, what is kept."""

from __future__ import annotations

import uuid

import anyio
import pytest
from temporalio.client import Client

from llm_worker import AssistantMessage, Cancelled, UserMessage
from llm_worker.durable.temporal import RunHandle, TemporalRuns
from llm_worker.events import TextDelta
from llm_worker.store import SQLiteStore

from .conftest import Cluster


def session() -> str:
    return f"s-{uuid.uuid4().hex[:8]}"


async def runs_for(cluster: Cluster) -> TemporalRuns:
    client = await Client.connect(cluster.address)
    return TemporalRuns(client, task_queue=cluster.task_queue)


async def first_text(handle: RunHandle) -> None:
    async for event in handle.events():
        if isinstance(event, TextDelta):
            return


async def test_a_run_finishes_and_returns_its_result(cluster: Cluster) -> None:
    runs = await runs_for(cluster)
    handle = await runs.start("agent", "hello there", session=session())
    with anyio.fail_after(30):
        result = await handle.result()
    assert result.status == "finished"
    assert result.output == "Done: hello there."
    assert isinstance(result.items[0], UserMessage)


async def test_cancel_mid_stream_keeps_the_partial_text_with_reason_and_kind(
    cluster: Cluster,
) -> None:
    runs = await runs_for(cluster)
    name = session()
    handle = await runs.start("agent", "slow please", session=name)
    with anyio.fail_after(30):
        await first_text(handle)
        other = await runs_for(cluster)  # another client: as another process would
        assert await other.cancel(handle.run_id, "Stop pressed")
        with pytest.raises(Cancelled) as stopped:
            await handle.result()
    assert stopped.value.reason == "Stop pressed"
    assert stopped.value.kind == "explicit"
    message = stopped.value.partial.items[-1]
    assert isinstance(message, AssistantMessage) and message.interrupted
    assert message.text.startswith("word0 word1")
    with SQLiteStore(cluster.db) as store:
        assert store.load_history(name)[-1] == message
    assert [line.split(" ", 1)[1] for line in cluster.aborts() if "Stop pressed" in line] == [
        "explicit Stop pressed"
    ]
