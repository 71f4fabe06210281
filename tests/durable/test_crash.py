"""A worker killed with kill -9 mid-run: the run resumes on another worker from its commits."""

from __future__ import annotations

import uuid

import anyio
from temporalio.client import Client

from llm_worker import AssistantMessage, Note, ToolCall, ToolResult, UserMessage
from llm_worker.durable.temporal import RunOptions, TemporalRuns
from llm_worker.events import TextDelta
from llm_worker.store import SQLiteStore

from .conftest import Cluster

FAST_FAILOVER = RunOptions(heartbeat_timeout=2.0, retry_initial_interval=0.2)


async def test_a_run_killed_mid_stream_resumes_on_another_worker_without_rerunning_tools(
    own_cluster: Cluster,
) -> None:
    doomed = own_cluster.start_worker()
    client = await Client.connect(own_cluster.address)
    runs = TemporalRuns(client, task_queue=own_cluster.task_queue, options=FAST_FAILOVER)
    name = f"s-{uuid.uuid4().hex[:8]}"
    handle = await runs.start("agent", "crash test", session=name)
    with anyio.fail_after(60):
        async for event in handle.events():
            if isinstance(event, TextDelta):
                break  # the tool ran and its result is committed; the answer is streaming
        doomed.kill()
        own_cluster.start_worker()
        result = await handle.result()
    assert result.status == "finished"
    assert result.output == "Resumed after the crash."
    assert own_cluster.records() == ["executed"]  # the completed call was not run again
    kinds = [type(item) for item in result.items]
    assert kinds == [UserMessage, AssistantMessage, ToolCall, ToolResult, Note, AssistantMessage]
    note = result.items[4]
    assert isinstance(note, Note)
    assert "crash" in note.text  # the model was told the turn was cut off
    with SQLiteStore(own_cluster.db) as store:
        assert store.load_history(name) == list(result.items)
