"""The cancel mapping, unit by unit, in Temporal's ActivityEnvironment (no server needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.activity import ActivityCancellationDetails
from temporalio.testing import ActivityEnvironment

from llm_worker import AssistantMessage, Cancelled, Cause, Item, UserMessage, Worker
from llm_worker.cancel import CancelToken
from llm_worker.durable.temporal._activity import AgentActivity
from llm_worker.durable.temporal._cancel import (
    FALLBACK_REQUEST,
    await_translating_cancel,
    classify_cancel,
    run_kind,
    workflow_cancel_request,
)
from llm_worker.durable.temporal._payloads import CancelRequest, RunRequest, decode_outcome
from llm_worker.durable.temporal._sessions import SessionHistories
from llm_worker.store import SQLiteStore
from llm_worker.testing import Script, ScriptedModel


async def translated(
    details: ActivityCancellationDetails,
    learn: CancelRequest | Exception | None,
    *,
    learn_delay: float = 0.0,
) -> tuple[Cause | None, bool]:
    """Cancel an activity that awaits a run with ``details``; what the run's token saw."""
    env = ActivityEnvironment()
    token = CancelToken("run")

    async def run() -> Cause | None:
        await token.wait()
        return token.cause

    async def learn_request() -> CancelRequest | None:
        await asyncio.sleep(learn_delay)
        if isinstance(learn, Exception):
            raise learn
        return learn

    async def activity_body() -> tuple[Cause | None, bool]:
        return await await_translating_cancel(
            asyncio.create_task(run()), token, learn_request, learn_timeout=0.2
        )

    running = asyncio.ensure_future(env.run(activity_body))
    await asyncio.sleep(0.05)
    env.cancel(details)
    return await asyncio.wait_for(running, 10)


async def test_a_requested_cancel_becomes_the_runs_cause_with_the_recorded_reason_and_kind() -> (
    None
):
    cause, handed_off = await translated(
        ActivityCancellationDetails(cancel_requested=True),
        CancelRequest("newer input", "superseded"),
    )
    assert cause is not None
    assert (cause.kind, cause.reason, handed_off) == ("superseded", "newer input", False)


@pytest.mark.parametrize("failure", [RuntimeError("no workflow"), None])
async def test_a_reason_that_cannot_be_learned_falls_back_to_an_explicit_cancel(
    failure: Exception | None,
) -> None:
    cause, _ = await translated(ActivityCancellationDetails(cancel_requested=True), failure)
    assert cause is not None
    assert (cause.kind, cause.reason) == ("explicit", FALLBACK_REQUEST.reason)


async def test_a_reason_that_comes_too_late_falls_back_to_an_explicit_cancel() -> None:
    cause, _ = await translated(
        ActivityCancellationDetails(cancel_requested=True),
        CancelRequest("slow", "deadline"),
        learn_delay=5.0,
    )
    assert cause is not None
    assert cause.kind == "explicit"


@pytest.mark.parametrize(
    "details",
    [
        ActivityCancellationDetails(worker_shutdown=True),
        ActivityCancellationDetails(timed_out=True),
        ActivityCancellationDetails(not_found=True),
    ],
    ids=["shutdown", "timed_out", "not_found"],
)
async def test_a_worker_shutdown_or_a_given_up_attempt_hands_the_run_off(
    details: ActivityCancellationDetails,
) -> None:
    cause, handed_off = await translated(details, CancelRequest("never asked", "explicit"))
    assert handed_off
    assert cause is not None
    assert cause.kind == "explicit"
    assert cause.reason != "never asked"  # a hand-off does not ask the workflow


def test_cancellation_details_are_classified() -> None:
    assert classify_cancel(None) == "foreign"
    assert classify_cancel(ActivityCancellationDetails(cancel_requested=True)) == "requested"
    assert classify_cancel(ActivityCancellationDetails(paused=True)) == "handoff"
    assert classify_cancel(ActivityCancellationDetails()) == "foreign"


def test_a_request_never_gives_a_run_the_external_kind() -> None:
    assert run_kind("external") == "explicit"
    assert run_kind("no such kind") == "explicit"
    assert run_kind("deadline") == "deadline"
    assert workflow_cancel_request(has_parent=True).kind == "parent"
    assert workflow_cancel_request(has_parent=False).kind == "explicit"


async def test_the_agent_activity_returns_the_partial_run_when_cancelled(tmp_path: Path) -> None:
    def slow_writer(history: list[Item]) -> Worker:
        text = Script.text(" ".join(f"w{i}" for i in range(200)), chunks=200)
        return Worker(ScriptedModel([text], pace=0.01), history=history)

    histories = SessionHistories(tmp_path / "s.db")
    agent = AgentActivity(
        {"writer": slow_writer},
        histories,
        heartbeat_every=0.05,
        event_interval=0.1,
        inline_items_limit=1 << 20,
    )
    env = ActivityEnvironment()
    heartbeats: list[object] = []
    env.on_heartbeat = lambda *details: heartbeats.append(details)
    request = RunRequest("writer", "write", "chat", run_key="wf/run-1", events=False)
    running = asyncio.ensure_future(env.run(agent.run_agent, request))
    await asyncio.sleep(0.5)
    env.cancel(ActivityCancellationDetails(cancel_requested=True))
    outcome = await asyncio.wait_for(running, 10)
    histories.close()
    with pytest.raises(Cancelled) as stopped:
        decode_outcome(outcome)
    assert stopped.value.kind == "explicit"  # the workflow could not be asked here: fallback
    user, message = stopped.value.partial.items
    assert isinstance(user, UserMessage)
    assert isinstance(message, AssistantMessage)
    assert message.interrupted
    assert message.text.startswith("w0 w1")
    assert heartbeats  # progress was reported (and is how a cancel is learned)
    with SQLiteStore(tmp_path / "s.db") as store:
        assert store.load_history("chat") == [user, message]
