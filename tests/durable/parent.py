"""A parent workflow for the tests: runs one agent run as its child, and awaits it."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from llm_worker.durable.temporal import start_child_run


@workflow.defn(name="test-parent")
class ParentWorkflow:
    @workflow.run
    async def run(self, session: str, task_queue: str) -> None:
        child = await start_child_run(
            "agent", "slow please", session=session, task_queue=task_queue
        )
        await child
