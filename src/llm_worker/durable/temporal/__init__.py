"""Durable runs on Temporal: stop a run from any process, resume it elsewhere after a crash.

::

    from llm_worker.durable.temporal import AgentWorker, TemporalRuns

    # on each worker machine: agents by name; models, tools and keys stay there
    async with AgentWorker(client, task_queue="agents", agents={"support": make_support_worker}):
        await anyio.sleep_forever()          # make_support_worker(history) -> Worker

    # in any process
    runs = TemporalRuns(client, task_queue="agents")
    handle = await runs.start("support", "the user's input", session="chat-42")
    await runs.cancel(handle.run_id, "Stop pressed")   # or: await handle.cancel("Stop pressed")
    result = await handle.result()   # a RunResult, or raises Cancelled / RunError (.partial)

Layout: `_workflow` (the run workflow: cancel requests, events, the activity's outcome),
`_activity` (the agent activity: a run on its session, heartbeats, events), `_cancel` (the
mapping from a Temporal cancellation to the run token's cause), `_payloads` (what crosses
Temporal, and the conversion of results and errors), `_sessions` (histories by reference in the
session store, and resuming an attempt), `_events` (publishing events), `_worker`
(`AgentWorker`), `_client` (`TemporalRuns`, `RunHandle`), `_child` (runs as child
workflows). Needs ``llm-worker[temporal]``.
"""

from ._activity import AgentFactory
from ._cancel import HandedOff
from ._child import child_run_result, start_child_run
from ._client import RunHandle, RunNotFound, RunOptions, TemporalRuns
from ._payloads import RemoteError
from ._worker import AgentWorker
from ._workflow import AgentRunWorkflow

__all__ = [
    "AgentFactory",
    "AgentRunWorkflow",
    "AgentWorker",
    "HandedOff",
    "RemoteError",
    "RunHandle",
    "RunNotFound",
    "RunOptions",
    "TemporalRuns",
    "child_run_result",
    "start_child_run",
]
