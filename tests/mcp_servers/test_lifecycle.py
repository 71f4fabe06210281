"""A server's life: started once and kept across runs, restarted after a crash, a clear error
when it cannot start, nothing left behind after ``aclose()``."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from llm_worker import Worker
from llm_worker.items import ToolResult
from llm_worker.mcp import MCPServer, MCPStartError
from llm_worker.testing import Script, ScriptedModel

from .conftest import ProbeLog, children, open_fds


async def test_a_server_is_kept_across_runs_and_restarted_after_it_crashes_mid_call(
    probe: Callable[..., MCPServer], probe_log: ProbeLog
) -> None:
    model = ScriptedModel(
        [
            Script.tool_calls(("echo", {"text": "one"})),
            "First.",
            Script.tool_calls(("crash", {})),
            "It crashed.",
            Script.tool_calls(("echo", {"text": "three"})),
            "Third.",
        ]
    )
    before = open_fds()
    async with Worker(model, tools=[probe()]) as worker:
        await worker.run("One.")
        crashed = await worker.run("Crash.")
        third = await worker.run("Three.")
        assert len(children()) == 1
    (error,) = [i for i in crashed.items if isinstance(i, ToolResult)]
    assert error.status == "error"
    assert "went away during the call of 'crash'" in error.content
    assert "probe: crashing on purpose" in error.content  # its stderr, shown
    (answer,) = [i for i in third.items if isinstance(i, ToolResult)]
    assert answer.content == "three"
    assert len(probe_log.pids()) == 2  # once for the first two runs, once after the crash
    assert children() == []
    assert open_fds() <= before


async def test_a_command_that_does_not_exist_is_a_clear_error_naming_it() -> None:
    server = MCPServer.stdio("no-such-mcp-server-here", args=["--port", "1"], name="ghost")
    worker = Worker(ScriptedModel(["Never."]), tools=[server])
    with pytest.raises(MCPStartError, match="no-such-mcp-server-here --port 1") as failed:
        await worker.run("Hello.")
    assert failed.value.server == "ghost"
    await worker.aclose()
    # The worker is not stuck: without the server it runs again.
    assert (await Worker(ScriptedModel(["Fine."])).run("Hello.")).output == "Fine."


async def test_a_server_that_exits_at_start_is_an_error_quoting_its_stderr() -> None:
    script = "import sys; print('bad config: no API key', file=sys.stderr); sys.exit(2)"
    server = MCPServer.stdio(sys.executable, args=["-c", script], name="broken")
    async with server:
        with pytest.raises(MCPStartError) as failed:
            await server.list_tools()
    message = str(failed.value)
    assert "could not start MCP server 'broken'" in message
    assert "bad config: no API key" in message
    assert children() == []
