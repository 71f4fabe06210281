"""Runs on Temporal, stopped from another process: what the caller gets, what is kept."""

from __future__ import annotations

import contextlib
import uuid

import anyio
import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from llm_worker import (
    AssistantMessage,
    Cancelled,
    Event,
    LLMWorkerError,
    ToolResult,
    UserMessage,
)
from llm_worker.durable.temporal import RunHandle, TemporalRuns
from llm_worker.events import RunCancelled, RunStarted, TextDelta, ToolStarted
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
    assert isinstance(message, AssistantMessage)
    assert message.interrupted
    assert message.text.startswith("word0 word1")
    with SQLiteStore(cluster.db) as store:
        assert store.load_history(name)[-1] == message
    assert [line.split(" ", 1)[1] for line in cluster.aborts() if "Stop pressed" in line] == [
        "explicit Stop pressed"
    ]


async def test_cancel_mid_tool_gives_the_tool_its_grace_and_keeps_its_partial_output(
    cluster: Cluster,
) -> None:
    runs = await runs_for(cluster)
    handle = await runs.start("agent", "tool please", session=session())
    with anyio.fail_after(30):
        async for event in handle.events():
            if isinstance(event, ToolStarted):
                break
        await anyio.sleep(0.3)  # the tool counts a little
        assert await handle.cancel("Stop pressed")
        with pytest.raises(Cancelled) as stopped:
            await handle.result()
    assert (stopped.value.kind, stopped.value.reason) == ("explicit", "Stop pressed")
    results = [i for i in stopped.value.partial.items if isinstance(i, ToolResult)]
    assert len(results) == 1
    assert results[0].status == "interrupted"
    assert results[0].content.startswith("counted to ")
    assert not results[0].content.startswith("counted to 0")
    assert "[Interrupted: Stop pressed; the output above is partial.]" in results[0].content


@pytest.mark.timeout(120)
async def test_a_cancel_before_the_run_started_takes_effect(own_cluster: Cluster) -> None:
    runs = await runs_for(own_cluster)  # no worker yet: the run cannot have started
    handle = await runs.start("agent", "slow please", session=session())
    assert await handle.cancel("changed my mind")
    own_cluster.start_worker()
    with anyio.fail_after(30), pytest.raises(Cancelled) as stopped:
        await handle.result()
    assert (stopped.value.kind, stopped.value.reason) == ("explicit", "changed my mind")
    assert stopped.value.partial.items == ()
    assert own_cluster.aborts() == []  # nothing ran, so nothing was aborted


async def test_a_cancel_after_the_run_ended_changes_nothing_and_hits_no_later_run(
    cluster: Cluster,
) -> None:
    runs = await runs_for(cluster)
    name = session()
    first = await runs.start("agent", "hello", session=name)
    with anyio.fail_after(30):
        await first.result()
        assert not await runs.cancel(first.run_id, "double-clicked Stop")
        second = await runs.start("agent", "again", session=name)
        assert not await first.cancel("late Stop")  # addressed to the first run: no effect
        result = await second.result()
    assert result.output == "Done: again."


async def test_newer_input_supersedes_the_running_run_of_its_session(cluster: Cluster) -> None:
    runs = await runs_for(cluster)
    name = session()
    first = await runs.start("agent", "slow please", session=name)
    with anyio.fail_after(30):
        await first_text(first)
        other = await runs_for(cluster)
        second = await other.start("agent", "newer input", session=name)
        with pytest.raises(Cancelled) as stopped:
            await first.result()
        result = await second.result()
    assert stopped.value.kind == "superseded"
    kept = stopped.value.partial.items[-1]
    assert isinstance(kept, AssistantMessage)
    assert kept.interrupted
    assert kept.text
    assert result.output == "Done: newer input."
    with SQLiteStore(cluster.db) as store:
        history = store.load_history(name)
    assert kept in history  # the superseded run's partial answer stays in the session
    assert isinstance(history[-1], AssistantMessage)
    assert history[-1].text == result.output


async def test_a_timeout_ends_the_run_with_kind_deadline(cluster: Cluster) -> None:
    runs = await runs_for(cluster)
    handle = await runs.start("agent", "slow please", session=session(), timeout=1.0)
    with anyio.fail_after(30), pytest.raises(Cancelled) as stopped:
        await handle.result()
    assert stopped.value.kind == "deadline"
    assert stopped.value.reason == "the run timed out after 1s"
    message = stopped.value.partial.items[-1]
    assert isinstance(message, AssistantMessage)
    assert message.interrupted


async def test_two_clients_cancelling_at_once_stop_the_run_once(cluster: Cluster) -> None:
    runs = await runs_for(cluster)
    handle = await runs.start("agent", "slow please", session=session())
    other = await runs_for(cluster)
    answers: list[bool] = []
    with anyio.fail_after(30):
        await first_text(handle)

        async def cancel(client_runs: TemporalRuns, reason: str) -> None:
            answers.append(await client_runs.cancel(handle.run_id, reason))

        async with anyio.create_task_group() as group:
            group.start_soon(cancel, runs, "Stop from tab A")
            group.start_soon(cancel, other, "Stop from tab B")
        with pytest.raises(Cancelled) as stopped:
            await handle.result()
    assert answers == [True, True]
    assert stopped.value.reason in ("Stop from tab A", "Stop from tab B")
    assert sum("Stop from tab" in line for line in cluster.aborts()) == 1  # on_abort once


async def test_a_follower_that_reconnects_loses_no_event(cluster: Cluster) -> None:
    runs = await runs_for(cluster)
    handle = await runs.start("agent", "slow please", session=session())
    seen: list[Event] = []
    with anyio.fail_after(30):
        async for event in handle.events():
            seen.append(event)
            if sum(isinstance(e, TextDelta) for e in seen) == 5:
                break  # the follower goes away mid-run...
        await anyio.sleep(0.5)
        follower = (await runs_for(cluster)).get(handle.run_id)  # ...and comes back elsewhere
        async for event in follower.events(after=len(seen)):
            seen.append(event)
            if sum(isinstance(e, TextDelta) for e in seen) == 50:
                await handle.cancel("enough")
        everything = [event async for event in handle.events()]
    assert seen == everything
    assert isinstance(seen[0], RunStarted)
    assert isinstance(seen[-1], RunCancelled)
    text = "".join(e.text for e in seen if isinstance(e, TextDelta))
    assert text.startswith("word0 word1 word2")


async def test_cancelling_the_workflow_itself_stops_the_run_as_explicit(cluster: Cluster) -> None:
    runs = await runs_for(cluster)
    handle = await runs.start("agent", "slow please", session=session())
    with anyio.fail_after(30):
        await first_text(handle)
        await runs.client.get_workflow_handle(handle.run_id.partition(":")[2]).cancel()
        with pytest.raises(Cancelled) as stopped:
            await handle.result()
    assert (stopped.value.kind, stopped.value.reason) == ("explicit", "the workflow was cancelled")
    message = stopped.value.partial.items[-1]
    assert isinstance(message, AssistantMessage)
    assert message.interrupted


async def test_cancelling_a_parent_workflow_stops_its_child_run_as_parent(cluster: Cluster) -> None:
    runs = await runs_for(cluster)
    name = session()
    parent = await runs.client.start_workflow(
        "test-parent",
        args=[name, cluster.task_queue],
        id=f"parent-{name}",
        task_queue=cluster.task_queue,
    )
    with anyio.fail_after(30):
        child_id = runs.workflow_id(name)
        while True:  # the child starts once the parent ran
            with contextlib.suppress(RPCError):
                description = await runs.client.get_workflow_handle(child_id).describe()
                break
            await anyio.sleep(0.1)
        child = runs.get(f"{description.run_id}:{child_id}")
        await first_text(child)
        await parent.cancel()
        with pytest.raises(Cancelled) as stopped:
            await child.result()
    assert (stopped.value.kind, stopped.value.reason) == (
        "parent",
        "the parent workflow was cancelled",
    )
    message = stopped.value.partial.items[-1]
    assert isinstance(message, AssistantMessage)
    assert message.interrupted


async def test_a_run_larger_than_a_temporal_payload_is_read_from_the_store(
    cluster: Cluster,
) -> None:
    client = await Client.connect(cluster.address)
    runs = TemporalRuns(client, task_queue=cluster.task_queue, store=str(cluster.db))
    without_store = await runs_for(cluster)
    name = session()
    with anyio.fail_after(60):
        result = await (await runs.start("agent", "big please", session=name)).result()
        # the session's history (> 3 MB) never crosses Temporal: the next run just works
        again = await (await without_store.start("agent", "hi again", session=name)).result()
        big_again = await without_store.start("agent", "big again", session=name)
        with pytest.raises(LLMWorkerError, match="pass store="):
            await big_again.result()
    outputs = [i for i in result.items if isinstance(i, ToolResult)]
    assert len(outputs[0].content) == 3_000_000
    assert result.output == "Done: big please."
    assert again.output == "Done: hi again."
