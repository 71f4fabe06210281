"""Tool sources in a Toolset: listed when first needed, again only when their version moves;
clashing names prefixed; closed with the worker. (Real MCP servers: tests/mcp_servers.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llm_worker import Worker, tool
from llm_worker.items import Attachment, ToolResult
from llm_worker.testing import Script, ScriptedModel
from llm_worker.tools import Tool, ToolOutput, Toolset, ToolSource


@tool
async def lookup(key: str) -> str:
    """The local lookup."""
    return f"local {key}"


class Listed:
    """A ToolSource in memory: its tools, a version, how often it was listed and closed."""

    def __init__(self, name: str, *tools: Tool[..., Any]) -> None:
        self.name = name
        self.tools = list(tools)
        self.tools_version = 0
        self.listings = 0
        self.closed = 0

    async def list_tools(self) -> Sequence[Tool[..., Any]]:
        self.listings += 1
        return list(self.tools)

    async def aclose(self) -> None:
        self.closed += 1


def test_a_listed_source_is_a_tool_source() -> None:
    assert isinstance(Listed("x"), ToolSource)
    assert not isinstance(lookup, ToolSource)


async def test_sources_are_listed_once_and_again_when_their_version_moves() -> None:
    @tool(name="lookup")
    async def remote_lookup(key: str) -> ToolOutput:
        """The remote lookup."""
        picture = Attachment(type="image", mime_type="image/png", data="AA==")
        return ToolOutput(f"remote {key}", attachments=(picture,))

    source = Listed("docs", remote_lookup)
    toolset = Toolset([lookup, source])
    assert toolset.names == ["lookup"]  # nothing listed before a run needs it
    await toolset.prepare()
    await toolset.prepare()
    assert source.listings == 1
    assert toolset.names == ["lookup", "docs_lookup"]  # the clash is prefixed
    assert toolset["docs_lookup"].fn is remote_lookup.fn
    assert remote_lookup.name == "lookup"  # the source's own tool is left alone

    source.tools_version += 1  # e.g. notifications/tools/list_changed
    await toolset.prepare()
    assert source.listings == 2


async def test_a_worker_calls_listed_tools_keeps_attachments_and_closes_its_sources() -> None:
    @tool(name="lookup")
    async def remote_lookup(key: str) -> ToolOutput:
        """The remote lookup."""
        picture = Attachment(type="image", mime_type="image/png", data="AA==")
        return ToolOutput(f"remote {key}", attachments=(picture,))

    @tool
    async def refuse() -> ToolOutput:
        """Always an error the model should see."""
        return ToolOutput("no such key", status="error")

    source = Listed("docs", remote_lookup, refuse)
    model = ScriptedModel(
        [Script.tool_calls(("docs_lookup", {"key": "a"}), ("refuse", {})), "Done."]
    )
    async with Worker(model, tools=[lookup, source]) as worker:
        result = await worker.run("Look it up.")
    by_name = {i.name: i for i in result.items if isinstance(i, ToolResult)}
    assert by_name["docs_lookup"].content == "remote a"
    assert by_name["docs_lookup"].attachments[0].data == "AA=="
    assert (by_name["refuse"].status, by_name["refuse"].content) == ("error", "no such key")
    assert source.closed == 1
