"""A test agent worker process: serves tests/durable/agents.py until killed or SIGTERM.

Usage: python agent_worker.py ADDRESS TASK_QUEUE DB [HEARTBEAT_THROTTLE]. Prints "ready" once
it polls.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from agents import AGENTS
from parent import ParentWorkflow
from temporalio.client import Client

from llm_worker.durable.temporal import AgentWorker


async def main(address: str, task_queue: str, db: str, throttle: float) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with AgentWorker(
        client,
        task_queue=task_queue,
        agents=AGENTS,
        store=db,
        heartbeat_throttle=throttle,
        workflows=[ParentWorkflow],
    ):
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    throttle = float(sys.argv[4]) if len(sys.argv) > 4 else 0.2
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], throttle))
