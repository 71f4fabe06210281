"""A tool's timeout and grace are checked where they are given; ``inf`` means no limit."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

from llm_worker.cancel import CancelToken, ConcurrentMap
from llm_worker.tools import ToolContext, tool

BAD = [
    pytest.param(math.nan, ValueError, id="nan"),
    pytest.param(-1, ValueError, id="negative"),
    pytest.param(True, TypeError, id="bool"),
    pytest.param("5", TypeError, id="str"),
]


@pytest.mark.parametrize(("timeout", "error"), BAD)
def test_a_tool_with_a_bad_timeout_fails_at_decoration_naming_the_tool(
    timeout: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="tool 'lookup': timeout"):

        @tool(timeout=timeout)
        def lookup(query: str) -> str:
            return query


def test_a_tool_timeout_of_zero_is_refused_as_a_mistake() -> None:
    with pytest.raises(ValueError, match="more than 0 seconds"):

        @tool(timeout=0)
        def lookup(query: str) -> str:
            return query


def test_an_infinite_tool_timeout_means_no_timeout() -> None:
    @tool(timeout=math.inf)
    def lookup(query: str) -> str:
        return query

    assert lookup.timeout is None


@pytest.mark.parametrize("timeout", [1e10, 1e300])
async def test_a_tool_with_a_huge_timeout_runs_and_leaves_other_deadlines_working(
    timeout: float,
) -> None:
    @tool(timeout=timeout)
    async def lookup(query: str) -> str:
        await anyio.sleep(0.01)
        return query

    runner: ConcurrentMap[str] = ConcurrentMap([lookup.bind({"query": "x"}, call_id="c1")])
    with anyio.fail_after(5):
        [outcome] = await runner.run()
    witness = CancelToken("witness")
    witness.cancel_after(0.01)
    with anyio.fail_after(5):
        await witness.wait()

    assert (outcome.status, outcome.value) == ("ok", "x")


async def test_a_timed_out_tool_with_an_infinite_grace_is_never_cancelled_hard() -> None:
    @tool(timeout=0.01)
    async def winding_down(ctx: ToolContext) -> str:
        await ctx.token.wait()
        await anyio.sleep(0.05)  # winding down: a hard cancel would cut this short
        return "partial"

    call = winding_down.bind({}, call_id="c1")
    runner: ConcurrentMap[str] = ConcurrentMap([call], grace=math.inf)
    with anyio.fail_after(5):
        [outcome] = await runner.run()

    assert (outcome.status, outcome.value) == ("interrupted", "partial")
