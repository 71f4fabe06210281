"""Quick start: a run stopped by its deadline keeps everything, and the worker goes on."""

import anyio

from llm_worker import Cancelled, ToolContext, Worker, tool


@tool
async def slow_count(limit: int, ctx: ToolContext) -> str:
    """Count to `limit`, slowly. Stops early, with partial output, when cancelled."""
    counted = 0
    while counted < limit and not ctx.cancelled:
        await anyio.sleep(0.1)
        counted += 1
    return f"counted to {counted}"


async def main() -> None:
    worker = Worker("offline", tools=[slow_count], system="You are helpful.")
    try:
        result = await worker.run("Use slow_count to 50.", timeout=1.5)
        print(result.output)
    except Cancelled as stopped:  # kind "deadline", reason, cause
        for item in stopped.partial.items:  # everything said and done is kept
            print(item.type, getattr(item, "content", ""))
    result = await worker.run("Go on.")  # same worker, at once; the model is told
    print(result.status, result.output)  # that its last turn was interrupted


if __name__ == "__main__":
    anyio.run(main)
