"""A worker killed with kill -9 mid-run: the run resumes on another worker from its commits."""

from __future__ import annotations

import uuid

import anyio
import pytest
from temporalio.client import Client

from llm_worker import AssistantMessage, Cancelled, Note, ToolCall, ToolResult, UserMessage
from llm_worker.durable.temporal import RunOptions, TemporalRuns
from llm_worker.events import TextDelta
from llm_worker.store import SQLiteStore

from .conftest import Cluster

FAST_FAILOVER = RunOptions(heartbeat_timeout=2.0, retry_initial_interval=0.2)


@pytest.mark.timeout(180)  # two worker processes start: slow on a loaded machine
async def test_a_run_killed_mid_stream_resumes_on_another_worker_without_rerunning_tools(
    own_cluster: Cluster,
) -> None:
    doomed = own_cluster.start_worker()
    client = await Client.connect(own_cluster.address)
    runs = TemporalRuns(client, task_queue=own_cluster.task_queue, options=FAST_FAILOVER)
    name = f"s-{uuid.uuid4().hex[:8]}"
    handle = await runs.start("agent", "crash test", session=name)
    with anyio.fail_after(150):
        async for event in handle.events():
            if isinstance(event, TextDelta):
                break  # the tool ran and its result is committed; the answer is streaming
        own_cluster.start_worker()  # the run stays on the first worker...
        doomed.kill()  # ...which dies
        result = await handle.result()
    assert result.status == "finished"
    assert result.output == "Resumed after the crash."
    assert own_cluster.records() == ["executed"]  # the completed call was not run again
    kinds = [type(item) for item in result.items]
    kinds_and_texts = [
        (kind.__name__, getattr(item, "text", "")[:60])
        for kind, item in zip(kinds, result.items, strict=True)
    ]
    assert kinds[:4] == [UserMessage, AssistantMessage, ToolCall, ToolResult], kinds_and_texts
    assert kinds[-1] is AssistantMessage, kinds_and_texts
    # On a loaded machine an attempt may also be handed off (a missed heartbeat): that adds an
    # interrupted answer (and a note), never a second call or result.
    assert set(kinds[4:]) <= {AssistantMessage, Note}, kinds_and_texts
    notes = [item for item in result.items if isinstance(item, Note)]
    assert any("crash" in note.text for note in notes)  # the model was told of the crash
    with SQLiteStore(own_cluster.db) as store:
        assert store.load_history(name) == list(result.items)


@pytest.mark.timeout(180)
async def test_a_run_cancelled_while_its_worker_is_dead_returns_what_it_committed(
    own_cluster: Cluster,
) -> None:
    doomed = own_cluster.start_worker()
    client = await Client.connect(own_cluster.address)
    runs = TemporalRuns(client, task_queue=own_cluster.task_queue, options=FAST_FAILOVER)
    handle = await runs.start("agent", "crash test", session=f"s-{uuid.uuid4().hex[:8]}")
    with anyio.fail_after(150):
        async for event in handle.events():
            if isinstance(event, TextDelta):
                break
        own_cluster.start_worker()
        doomed.kill()
        assert await handle.cancel("Stop while the worker was down")
        with pytest.raises(Cancelled) as stopped:
            await handle.result()
    assert (stopped.value.kind, stopped.value.reason) == (
        "explicit",
        "Stop while the worker was down",
    )
    kept = stopped.value.partial.items
    assert [type(item) for item in kept[:4]] == [
        UserMessage,
        AssistantMessage,
        ToolCall,
        ToolResult,
    ]
    assert own_cluster.records() == ["executed"]
