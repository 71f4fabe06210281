"""A cancellation sweep through the real integration: a run stopped after each of its events."""

from __future__ import annotations

import uuid

import anyio
import pytest
from temporalio.client import Client

from llm_worker import Cancelled, Item, RunResult, ToolCall, ToolResult
from llm_worker.durable.temporal import TemporalRuns
from llm_worker.store import SQLiteStore

from .conftest import Cluster


async def stop_after(
    runs: TemporalRuns, events: int, reason: str
) -> tuple[str, RunResult | Cancelled]:
    """Start a run, cancel it (from this other process) once ``events`` events were seen."""
    session = f"sweep-{uuid.uuid4().hex[:8]}"
    handle = await runs.start("agent", "steps", session=session)
    if events == 0:
        await handle.cancel(reason)
    else:
        seen = 0
        async for _ in handle.events():
            seen += 1
            if seen == events:
                await handle.cancel(reason)
                break
    try:
        return session, await handle.result()
    except Cancelled as stopped:
        return session, stopped


@pytest.mark.timeout(180)
async def test_a_run_stopped_after_any_of_its_events_keeps_everything(cluster: Cluster) -> None:
    client = await Client.connect(cluster.address)
    runs = TemporalRuns(client, task_queue=cluster.task_queue)
    with anyio.fail_after(60):
        total = len([e async for e in (await runs.start("agent", "steps")).events()])
    cancelled = 0
    for point in range(0, total, 4):  # every 4th event: ~8 stops
        reason = f"sweep at event {point}"
        with anyio.fail_after(30):
            session, outcome = await stop_after(runs, point, reason)
        items: tuple[Item, ...]
        if isinstance(outcome, Cancelled):
            cancelled += 1
            assert (outcome.kind, outcome.reason) == ("explicit", reason)
            items = outcome.partial.items
        else:
            assert outcome.status == "finished"  # the cancel came after the end: no effect
            items = outcome.items
        calls = sorted(i.call_id for i in items if isinstance(i, ToolCall))
        assert sorted(i.call_id for i in items if isinstance(i, ToolResult)) == calls
        with SQLiteStore(cluster.db) as store:
            kept = store.load_history(session) if items else []
        assert kept == list(items)  # what the caller got is what the session holds
        aborts = [line for line in cluster.aborts() if line.endswith(reason)]
        ran = isinstance(outcome, Cancelled) and bool(items)
        assert len(aborts) == (1 if ran else 0)  # on_abort once, on the worker, if it ran
    assert cancelled >= 3
