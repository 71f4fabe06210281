"""A hook that guards tool calls: it skips one, pauses on another for approval, then resumes.

A scripted model stands in for a real one, so the tool calls are always the same. Offline.
"""

from collections.abc import Iterable

import anyio

from llm_worker import (
    Abort,
    Aborted,
    AssistantMessage,
    Cause,
    HookContext,
    Hooks,
    Item,
    Pause,
    Skip,
    ToolCall,
    ToolResult,
    UserMessage,
    Worker,
    tool,
)
from llm_worker.items import unanswered_calls
from llm_worker.testing import Script, ScriptedModel


@tool
def read_file(path: str) -> str:
    """Read a file of the project."""
    return f"(contents of {path})"


@tool
def delete_file(path: str) -> str:
    """Delete a file of the project."""
    return f"deleted {path}"


class Guard(Hooks):
    """Reading is free; deleting a system file is refused; any other deletion needs approval."""

    async def before_tool_call(self, ctx: HookContext, call: ToolCall) -> Skip | Pause | None:
        if call.name != "delete_file":
            return None
        path = (call.arguments or {}).get("path", "")
        if path.startswith("/etc/"):
            return Skip("deleting system files is not allowed")  # the model sees this reason
        return Pause("deletions need a person's approval")

    async def on_prompt_submit(self, ctx: HookContext, message: UserMessage) -> Abort | None:
        if "password" in message.text:
            return Abort("prompts must not contain passwords")
        return None

    async def on_abort(self, ctx: HookContext, reason: str, cause: Cause) -> None:
        print(f"   on_abort: {reason} (kind {cause.kind})")  # once per interrupted run


def show(items: Iterable[Item]) -> None:
    for item in items:
        if isinstance(item, ToolResult):
            print(f"   result {item.name}: {item.status}: {item.content}")
        elif isinstance(item, AssistantMessage) and item.text:
            print(f"   assistant: {item.text}")


async def main() -> None:
    model = ScriptedModel(
        [
            Script.tool_calls(
                ("read_file", {"path": "notes.txt"}),
                ("delete_file", {"path": "/etc/hosts"}),
                ("delete_file", {"path": "build/old.log"}),
            ),
            "I read notes.txt and deleted build/old.log; /etc/hosts was not allowed.",
        ]
    )
    worker = Worker(model, tools=[read_file, delete_file], hooks=[Guard()])

    result = await worker.run("Tidy up the project.")
    print(f"run: {result.status}")  # paused: no tool of this response has run yet
    show(result.items)
    waiting = unanswered_calls(worker.history)
    print("waiting for approval:", ", ".join(f"{c.name}({c.arguments})" for c in waiting))

    approved = True  # a person clicked "Allow"
    if approved:
        result = await worker.resume()  # runs the approved calls without asking again
    print(f"resume: {result.status}")
    show(result.items)

    try:
        await worker.run("My password is hunter2, store it.")
    except Aborted as aborted:
        print(f"run: aborted by a hook: {aborted.reason}")


if __name__ == "__main__":
    anyio.run(main)
