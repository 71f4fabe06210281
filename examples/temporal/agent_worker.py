"""The worker side of examples/temporal_stop.py: serves the "counter" agent until SIGTERM.

Usage: python agent_worker.py TEMPORAL_ADDRESS TASK_QUEUE SESSIONS_DB. On a real deployment
every machine runs this; models, tools and API keys live here, never in the callers.
"""

import asyncio
import signal
import sys

import anyio
from temporalio.client import Client

from llm_worker import Item, ToolContext, Worker, tool
from llm_worker.durable.temporal import AgentWorker
from llm_worker.models import OfflineModel


@tool
async def slow_count(limit: int, ctx: ToolContext) -> str:
    """Count to `limit`, one number every 0.05 s; when cancelled, return what was counted."""
    counted = 0
    while counted < limit and not ctx.cancelled:
        with anyio.move_on_after(0.05):
            await ctx.token.wait()
        if not ctx.cancelled:
            counted += 1
    return f"counted to {counted} of {limit}"


def make_counter(history: list[Item]) -> Worker:
    """Called for every run, with the session's history (kept in the shared session store)."""
    return Worker(OfflineModel(pace=0.02), history=history, tools=[slow_count], tool_grace=1.0)


async def main(address: str, task_queue: str, db: str) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    agents = {"counter": make_counter}
    async with AgentWorker(client, task_queue=task_queue, agents=agents, store=db):
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
