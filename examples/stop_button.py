"""A Stop button in another thread: stop an answer, then a tool, keep everything, go on.

A GUI runs its event loop in one thread and the agent in another; the button's callback just calls
``worker.cancel()``, which is thread-safe and never blocks. Offline, no key, a few seconds.
"""

import threading
import time

import anyio

from llm_worker import Cancelled, ToolContext, ToolResult, Worker, tool
from llm_worker.models import OfflineModel

tool_running = threading.Event()  # set by the tool, so the button knows when to press


@tool
async def slow_count(limit: int, ctx: ToolContext) -> str:
    """Count to `limit`, one number every 0.05 s; when cancelled, return what was counted."""
    tool_running.set()
    counted = 0
    while counted < limit:
        with anyio.move_on_after(0.05):
            await ctx.token.wait()  # returns as soon as this call is cancelled
        if ctx.cancelled:
            break
        counted += 1
    return f"counted to {counted} of {limit}"


def press_stop_when(ready: threading.Event, worker: Worker, after: float) -> threading.Thread:
    """The Stop button: a plain thread that waits for `ready`, then cancels the worker."""

    def button() -> None:
        ready.wait(10)
        time.sleep(after)
        worker.cancel("user pressed Stop")

    thread = threading.Thread(target=button, name="stop-button")
    thread.start()
    return thread


async def ask(worker: Worker, prompt: str, answering: threading.Event) -> None:
    """Stream one run, printing the answer; print what was kept if it was stopped."""
    print(f"\nyou: {prompt}\nmodel: ", end="", flush=True)
    async with worker.stream(prompt) as run:
        async for event in run:
            if event.type == "text_delta":
                answering.set()
                print(event.text, end="", flush=True)
    print()
    if isinstance(run.error, Cancelled):
        print(f"-> stopped ({run.error.kind}: {run.error.reason}); kept:")
        for item in run.error.partial.items:
            if isinstance(item, ToolResult):
                print(f"   tool result {item.name}: {item.status}: {item.content.splitlines()[0]}")
            else:
                interrupted = " (interrupted)" if getattr(item, "interrupted", False) else ""
                print(f"   {item.type}{interrupted}")
    else:
        print(f"-> {run.result.status}")


async def main() -> None:
    worker = Worker(OfflineModel(pace=0.02), tools=[slow_count], tool_grace=1.0)

    # 1. Stop in the middle of an answer: the text streamed so far is kept.
    answering = threading.Event()
    button = press_stop_when(answering, worker, after=0.2)
    await ask(worker, "Tell me how cancellation works.", answering)
    button.join()

    # 2. Stop while a tool runs: the tool sees its token, returns partial output, which is kept.
    button = press_stop_when(tool_running, worker, after=0.3)
    await ask(worker, "Use slow_count to 100.", threading.Event())
    button.join()

    # 3. The same worker goes on at once, and the model is told it was interrupted.
    await ask(worker, "Please go on.", threading.Event())
    note = next(item for item in reversed(worker.history) if item.type == "note")
    print(f"note sent to the model: {note.text}")
    print(f"a Stop while idle does nothing: worker.cancel() -> {worker.cancel('too late')}")


if __name__ == "__main__":
    anyio.run(main)
