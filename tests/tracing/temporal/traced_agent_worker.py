"""An agent worker process whose client carries Temporal's TracingInterceptor and whose spans go
to a JSON-lines file (as ``--trace FILE`` writes them).

Usage: python traced_agent_worker.py ADDRESS TASK_QUEUE DB SPANS. Prints "ready" once it polls;
SIGTERM stops it and flushes the spans.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "durable"))

from agents import AGENTS
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from llm_worker.durable.temporal import AgentWorker
from llm_worker.tracing._export import start_export


async def main(address: str, task_queue: str, db: str, spans: str) -> None:
    export = start_export(spans, include_content=False)
    try:
        client = await Client.connect(address, interceptors=[TracingInterceptor()])
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with AgentWorker(client, task_queue=task_queue, agents=AGENTS, store=db):
            print("ready", flush=True)
            await stop.wait()
    finally:
        export.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
