"""Stopping a run that is calling MCP tools: the server is told why, progress is kept, a server
that never answers is abandoned within the grace bound, nothing is left behind."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from llm_worker import Cancelled, Worker
from llm_worker.events import ToolProgress
from llm_worker.items import ToolResult
from llm_worker.mcp import MCPServer
from llm_worker.testing import Script, ScriptedModel, cancellation_sweep

from .conftest import HTTPProbe, ProbeLog, children, open_fds


def results(items: list[Any]) -> list[ToolResult]:
    return [item for item in items if isinstance(item, ToolResult)]


async def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``condition()`` until it is truthy (a generous bound: this is not a timing check)."""
    with anyio.fail_after(timeout):
        while not (value := condition()):
            await anyio.sleep(0.02)
    return value


async def stop_after_progress(worker: Worker, reason: str, reports: int = 2) -> Cancelled:
    """Run the counting tool, press Stop after ``reports`` progress events; return the error."""
    seen = 0
    async with worker.stream("Count.") as run:
        async for event in run:
            if isinstance(event, ToolProgress):
                seen += 1
                if seen == reports:
                    run.cancel(reason)
    assert isinstance(run.error, Cancelled)
    return run.error


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_stop_mid_call_tells_the_server_why_and_keeps_its_progress(
    transport: str,
    probe: Callable[..., MCPServer],
    probe_log: ProbeLog,
    shared_http: HTTPProbe,
) -> None:
    server = probe() if transport == "stdio" else MCPServer.http(shared_http.url, name="probe")
    log = probe_log if transport == "stdio" else shared_http.log
    reason = f"user pressed Stop ({transport}, {time.monotonic_ns()})"
    model = ScriptedModel([Script.tool_calls(("count", {"steps": 400})), "Ok."])
    async with Worker(model, tools=[server]) as worker:
        stopped = await stop_after_progress(worker, reason)
        (kept,) = results(stopped.partial.items)
        assert kept.status == "interrupted"
        assert kept.content.startswith("counted 1\ncounted 2")
        assert reason in kept.content
        # The server read the cancel, with our reason, once; its tool stopped counting.
        cancels = await wait_for(lambda: [c for c in log.cancels() if c.get("reason") == reason])
        assert len(cancels) == 1
        if transport == "stdio":  # a log of its own: no second ("caller cancelled") cancel
            assert log.cancels() == cancels
            await wait_for(lambda: any("stopped_at" in e for e in log.events()))
        # The same worker and server go on at once.
        assert (await worker.run("Go on.")).status == "finished"


async def test_a_server_that_never_answers_is_abandoned_within_the_grace_bound(
    probe: Callable[..., MCPServer],
) -> None:
    model = ScriptedModel([Script.tool_calls(("hang", {"seconds": 60})), "Ok."])
    server = probe()
    async with Worker(model, tools=[server], tool_grace=0.5) as worker:
        started = time.monotonic()
        stopped = await stop_after_progress(worker, "the user gave up", reports=1)
        took = time.monotonic() - started
        (kept,) = results(stopped.partial.items)
    assert kept.status == "abandoned"
    assert kept.content.startswith("about to hang")
    assert "the user gave up" in kept.content
    assert took < 15  # the bug this guards against is waiting for the server forever
    assert children() == []  # closing the worker stopped the hung server too


async def test_stop_while_the_server_starts_or_lists_returns_at_once_and_the_worker_goes_on(
    probe: Callable[..., MCPServer], probe_log: ProbeLog
) -> None:
    slow = probe(MCP_PROBE_START_DELAY="2", MCP_PROBE_LIST_DELAY="2")
    model = ScriptedModel(["Hello."])
    async with Worker(model, tools=[slow]) as worker:
        for phase in ("starting", "listing"):
            if phase == "listing":  # the start goes on without the run that asked for it
                await wait_for(probe_log.pids, timeout=30)
                await anyio.sleep(0.5)  # the handshake is quick once the process is up
            started = time.monotonic()
            with pytest.raises(Cancelled):
                await worker.run(f"Hello while {phase}.", timeout=0.3)
            assert time.monotonic() - started < 1.9, phase  # it did not wait for the server
        assert model.requests == []  # both stopped before the first request
        result = await worker.run("Hello again.")
        assert result.output == "Hello."
        assert "count" in [spec.name for spec in model.requests[0].tools]
        assert len(probe_log.pids()) == 1  # one process served all three runs
    assert children() == []


async def test_a_hundred_cancelled_calls_leave_no_process_task_or_descriptor(
    probe: Callable[..., MCPServer],
) -> None:
    server = probe()
    calls = [("count", {"steps": 1000}) for _ in range(10)]
    model = ScriptedModel([Script.tool_calls(*calls) for _ in range(10)])
    before = open_fds()
    async with Worker(model, tools=[server], tool_concurrency=10) as worker:
        for _ in range(10):  # 10 runs x 10 concurrent calls, each cancelled mid-call
            stopped = await stop_after_progress(worker, "stop them all", reports=20)
            kept = results(stopped.partial.items)
            assert [r.status for r in kept] == ["interrupted"] * 10
        assert len(children()) == 1  # the one server, kept across runs
    assert children() == []
    await wait_for(lambda: open_fds() <= before)


async def test_cancellation_sweep_with_mcp_calls_keeps_every_invariant(
    probe: Callable[..., MCPServer], record_sweep: Any
) -> None:
    # Over stdio: the streamable-HTTP transport serves each request in a task of its own that
    # outlives the call by a moment (it belongs to the connection, not to the run), which the
    # sweep's task count would take for a leak.
    async with probe() as server:
        listed = await server.list_tools()  # MCP tools are Tools: a worker may take them as is
        echo = next(t for t in listed if t.name == "echo")

        def make_worker() -> Worker:
            calls = [("echo", {"text": "one"}), ("echo", {"text": "two"})]
            model = ScriptedModel([Script.tool_calls(*calls), "Done.", "Again."])
            return Worker(model, tools=[echo])

        report = await cancellation_sweep(make_worker, "Echo twice.", max_checkpoints=40)
    record_sweep("mcp: two calls to a stdio server", report)
    report.raise_for_violations()
    assert report.runs > 1
