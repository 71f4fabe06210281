"""Tool, @tool and Toolset: decoration, context injection, rendering results, running calls
under cancellation, and the one grace (tools/_tool, tools/_context)."""

import dataclasses
import inspect
import threading
import time
from typing import Any

import anyio
import pytest

from llm_worker.cancel import CancelToken, ConcurrentMap, Interrupted
from llm_worker.tools import Tool, ToolContext, Toolset, tool

from ._helpers import (
    Color,
    LineItem,
    Order,
    add,
    place_order,
)

# -- decoration ---------------------------------------------------------------------------------


def test_decorated_functions_stay_callable() -> None:
    assert add(2, 3) == 5
    assert isinstance(add, Tool)
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two integers."


async def test_decorated_async_functions_stay_awaitable() -> None:
    order = Order(customer="ann", lines=[LineItem(sku="x")])
    result = await place_order(order, ToolContext(call_id="c9"), priority="high")
    assert result == "ann:1:high:red:None:c9"


def test_decorator_options_override_name_description_and_timeout() -> None:
    @tool(name="sum_up", description="Sums.", timeout=2.5, strict=False)
    def f(a: int) -> int:
        """Ignored docstring."""
        return a

    assert (f.name, f.description, f.timeout, f.strict) == ("sum_up", "Sums.", 2.5, False)
    assert f.spec.name == "sum_up"
    assert f(4) == 4


def test_tool_of_a_tool_is_the_same_tool_unless_options_change_it() -> None:
    assert tool(add) is add
    renamed = tool(add, name="plus")
    assert (renamed.name, add.name) == ("plus", "add")
    assert renamed(1, 1) == 2


def test_bad_names_are_rejected_at_decoration() -> None:
    with pytest.raises(ValueError, match="invalid tool name '<lambda>'"):
        tool(lambda: None)
    with pytest.raises(ValueError, match="invalid tool name 'has space'"):
        tool(add.fn, name="has space")
    assert tool(lambda: None, name="ok").name == "ok"


async def test_bound_call_injects_a_context_built_from_its_token() -> None:
    seen: list[ToolContext] = []

    @tool
    async def probe(x: int, context: ToolContext) -> int:
        seen.append(context)
        return x * 2

    token = CancelToken("call")
    deps = object()
    call = probe.bind(probe.validate('{"x": "21"}'), call_id="c1", turn=3, deps=deps)
    assert await call(token) == 42
    [ctx] = seen
    assert (ctx.token, ctx.call_id, ctx.tool_name, ctx.turn, ctx.deps) == (
        token,
        "c1",
        "probe",
        3,
        deps,
    )


def test_context_helpers_delegate_to_the_token() -> None:
    ctx = ToolContext()
    assert not ctx.cancelled
    assert ctx.cause is None
    ctx.raise_if_cancelled()
    ctx.token.cancel("stop")
    assert ctx.cancelled
    assert ctx.cause is not None
    assert ctx.cause.reason == "stop"
    with pytest.raises(Interrupted):
        ctx.raise_if_cancelled()


def test_context_is_frozen() -> None:
    ctx = ToolContext(call_id="c1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.call_id = "other"  # type: ignore[misc]


# -- rendering results --------------------------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("as is", "as is"),
        (None, ""),
        ({"a": [1, 2], "b": None}, '{"a":[1,2],"b":null}'),
        ([1, "two"], '[1,"two"]'),
        ((1, 2), "[1,2]"),
        (3, "3"),
        (1.5, "1.5"),
        (True, "true"),
        (LineItem(sku="s", quantity=2), '{"sku":"s","quantity":2}'),
        (Point(1, 2), '{"x":1,"y":2}'),
        (Color.BLUE, "blue"),
        (b"\x00\x01\x02", "<3 bytes of binary data>"),
        (bytearray(5), "<5 bytes of binary data>"),
    ],
)
def test_render_result(value: Any, expected: str) -> None:
    assert add.render_result(value) == expected


def test_render_result_never_raises() -> None:
    circular: list[Any] = []
    circular.append(circular)
    assert isinstance(add.render_result(circular), str)
    assert isinstance(add.render_result({"blob": b"\xff"}), str)
    assert "Unprintable" in add.render_result(Unprintable())


# -- execution ----------------------------------------------------------------------------------


def test_bound_async_tool_is_a_coroutine_function_and_sync_tool_is_not() -> None:
    async_call = place_order.bind({}, call_id="c1")
    sync_call = add.bind({"a": 1, "b": 2}, call_id="c2")
    assert inspect.iscoroutinefunction(async_call)
    assert not inspect.iscoroutinefunction(sync_call)
    assert sync_call(CancelToken()) == 3


async def test_sync_and_async_tools_run_in_a_concurrent_map() -> None:
    loop_thread = threading.get_ident()

    @tool
    def where() -> int:
        return threading.get_ident()

    order = Order(customer="bo", lines=[])
    runner: ConcurrentMap[Any] = ConcurrentMap(
        [
            where.bind({}, call_id="c1"),
            place_order.bind(place_order.validate({"order": order}), call_id="c2"),
        ]
    )
    outcomes = await runner.run()
    assert [o.status for o in outcomes] == ["ok", "ok"]
    assert outcomes[0].value != loop_thread  # the sync tool ran in a worker thread
    assert outcomes[1].value == "bo:0:low:red:None:c2"


def test_positional_only_parameters_are_passed_positionally() -> None:
    @tool
    def divide(a: int, b: int, /, ctx: ToolContext) -> str:
        return f"{a // b}:{ctx.call_id}"

    call = divide.bind(divide.validate({"a": 7, "b": 2}), call_id="c1")
    assert call(CancelToken()) == "3:c1"

    @tool
    def tag(ctx: ToolContext, label: str, /) -> str:
        return f"{ctx.call_id}:{label}"

    assert tag.bind(tag.validate({"label": "x"}), call_id="c2")(CancelToken()) == "c2:x"


async def test_timeout_cancels_the_call_token_with_a_deadline_cause() -> None:
    @tool(timeout=0.05)
    async def slow(ctx: ToolContext) -> str:
        collected = "partial"
        cause = await ctx.token.wait()
        return f"{collected} ({cause.kind}: {cause.reason})"

    runner: ConcurrentMap[str] = ConcurrentMap([slow.bind({}, call_id="c1")], grace=30)
    start = time.monotonic()
    with anyio.fail_after(10):
        [outcome] = await runner.run()
    assert time.monotonic() - start < 5  # ended by its token, not by the map's grace
    assert outcome.status == "interrupted"
    assert outcome.value == "partial (deadline: tool slow timed out after 0.05s)"
    assert outcome.token is not None
    assert outcome.token.cause is not None
    assert outcome.token.cause.kind == "deadline"
    assert runner.cause is None  # only this call timed out; the group was not cancelled


async def test_sync_tool_timeout_cancels_its_token_too() -> None:
    @tool(timeout=0.05)
    def polling(ctx: ToolContext) -> str:
        while not ctx.cancelled:
            time.sleep(0.005)
        assert ctx.cause is not None
        return f"stopped by {ctx.cause.kind}"

    runner: ConcurrentMap[str] = ConcurrentMap([polling.bind({}, call_id="c1")], grace=30)
    with anyio.fail_after(10):
        [outcome] = await runner.run()
    assert (outcome.status, outcome.value) == ("interrupted", "stopped by deadline")


async def test_timeout_is_disarmed_when_the_tool_returns_in_time() -> None:
    @tool(timeout=0.05)
    async def quick() -> str:
        return "done"

    token = CancelToken()
    assert await quick.bind({}, call_id="c1")(token) == "done"
    await anyio.sleep(0.15)
    assert not token.cancelled


async def test_async_tool_ignoring_its_timeout_is_cancelled_hard_after_the_maps_grace() -> None:
    @tool(timeout=0.05)
    async def stubborn() -> str:
        await anyio.sleep(30)
        return "never"

    runner: ConcurrentMap[str] = ConcurrentMap([stubborn.bind({}, call_id="c1")], grace=0.05)
    start = time.monotonic()
    with anyio.fail_after(10):
        [outcome] = await runner.run()
    assert time.monotonic() - start < 5
    assert outcome.status == "cancelled"
    assert outcome.value is None
    assert outcome.token is not None
    assert outcome.token.cause is not None
    assert outcome.token.cause.kind == "deadline"


async def test_sync_tool_ignoring_its_timeout_is_abandoned_after_the_maps_grace() -> None:
    release = threading.Event()

    @tool(timeout=0.05)
    def stuck() -> str:
        release.wait(10)
        return "too late"

    runner: ConcurrentMap[str] = ConcurrentMap([stuck.bind({}, call_id="c1")], grace=0.05)
    try:
        with anyio.fail_after(5):
            [outcome] = await runner.run()
    finally:
        release.set()
    assert (outcome.status, outcome.value) == ("abandoned", None)
    assert outcome.token is not None
    assert outcome.token.cause is not None
    assert outcome.token.cause.kind == "deadline"


async def test_only_the_maps_grace_decides_when_a_timed_out_tool_is_stopped_hard() -> None:
    @tool(timeout=0.01)
    async def winding_down(ctx: ToolContext) -> str:
        await ctx.token.wait()
        await anyio.sleep(0.2)  # winding down, well within the map's grace
        return "partial"

    # The tool's timeout is only a deadline on its token: nothing but the map stops it hard.
    call = winding_down.bind({}, call_id="c1")
    runner: ConcurrentMap[str] = ConcurrentMap([call], grace=30)
    with anyio.fail_after(10):
        [outcome] = await runner.run()

    assert (outcome.status, outcome.value) == ("interrupted", "partial")


async def test_sync_tool_sees_its_token_cancelled_from_the_loop() -> None:
    started = threading.Event()
    tool_thread: list[int] = []

    @tool
    def poll(ctx: ToolContext) -> str:
        tool_thread.append(threading.get_ident())
        started.set()
        while not ctx.cancelled:
            time.sleep(0.005)
        assert ctx.cause is not None
        return f"stopped: {ctx.cause.kind}"

    runner: ConcurrentMap[str] = ConcurrentMap([poll.bind({}, call_id="c1")], grace=30)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(runner.run)
            assert await anyio.to_thread.run_sync(started.wait, 5)
            runner.group_token.cancel("stop pressed")
    [outcome] = runner.outcomes
    assert (outcome.status, outcome.value) == ("interrupted", "stopped: parent")
    assert tool_thread != [threading.get_ident()]


async def test_tool_that_raises_interrupted_ends_as_cancelled() -> None:
    @tool
    async def obedient(ctx: ToolContext) -> str:
        await ctx.token.wait()
        ctx.raise_if_cancelled()
        return "unreachable"

    runner: ConcurrentMap[str] = ConcurrentMap([obedient.bind({}, call_id="c1")], grace=30)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(runner.run)
            await anyio.sleep(0.01)
            runner.group_token.cancel("stop")
    assert runner.outcomes[0].status == "cancelled"


# -- toolsets -----------------------------------------------------------------------------------


def test_toolset_accepts_tools_and_plain_functions() -> None:
    def shout(text: str) -> str:
        """Shout."""
        return text.upper()

    tools = Toolset([add, shout, place_order])
    assert tools.names == ["add", "shout", "place_order"]
    assert len(tools) == 3
    assert [t.name for t in tools] == tools.names
    assert tools.get("add") is add
    shout_tool = tools.get("shout")
    assert isinstance(shout_tool, Tool)
    assert shout_tool("hey") == "HEY"
    assert tools.get("missing") is None
    assert "shout" in tools
    assert tools["add"] is add
    assert [s.name for s in tools.specs()] == tools.names
    assert tools.specs()[1].description == "Shout."


def test_toolset_rejects_duplicate_names() -> None:
    def add(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="duplicate tool name 'add'"):
        Toolset([globals()["add"], add])
    assert Toolset([globals()["add"], tool(add, name="add_one")]).names == ["add", "add_one"]
