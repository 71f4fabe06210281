"""An MCP server's tools in a worker, and what Stop does to a call in progress.

The worker starts the server (examples/servers/counter.py, over stdio) when the first run needs
its tools, and keeps it across runs. Stop tells the server to stop the call, with the reason;
the progress the server reported is kept as the call's partial output; the same worker and
server run again at once. Needs the ``mcp`` extra: ``pip install 'llm-worker[mcp]'``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from llm_worker import Cancelled, ToolResult, Worker
from llm_worker.events import ToolProgress
from llm_worker.mcp import MCPServer
from llm_worker.testing import Script, ScriptedModel

SERVER = Path(__file__).parent / "servers" / "counter.py"


async def main() -> None:
    counter = MCPServer.stdio(sys.executable, args=[str(SERVER)], name="counter")
    model = ScriptedModel(  # stands in for a real model: it asks for the tool, then answers
        [Script.tool_calls(("count", {"limit": 100})), "I stopped counting.", "Sure."]
    )
    async with Worker(model, tools=[counter], tool_grace=2.0) as worker:
        async with worker.stream("Count to 100.") as run:
            async for event in run:
                if isinstance(event, ToolProgress):
                    print(f"progress: {event.message}")
                    if event.progress == 3:
                        run.cancel("the user pressed Stop")
        assert isinstance(run.error, Cancelled)
        print(f"stopped: {run.error.reason}")
        for item in run.error.partial.items:
            if isinstance(item, ToolResult):
                print(f"kept {item.name} ({item.status}):")
                print("  " + item.content.replace("\n", "\n  "))
        print(f"the server's stderr: {counter.stderr_tail().strip()}")
        print("tools offered:", ", ".join(spec.name for spec in model.requests[0].tools))
        again = await worker.run("Thanks.")  # same worker, same server process
        print(f"next run: {again.status}: {again.output}")
    print("closed: the server process has exited")


if __name__ == "__main__":
    anyio.run(main)
