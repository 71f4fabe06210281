"""A run on a Temporal worker in another process continues the caller's trace: Temporal's
`TracingInterceptor` carries the context in workflow and activity headers."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

from llm_worker.durable.temporal import TemporalRuns

from ..conftest import Spans

pytestmark = pytest.mark.timeout(90)

WORKER = Path(__file__).parent / "traced_agent_worker.py"


@contextlib.contextmanager
def traced_worker(address: str, task_queue: str, root: Path) -> Iterator[Path]:
    """A traced agent worker process; yields the file its spans go to (flushed on exit)."""
    spans_file = root / "worker-spans.jsonl"
    command = [sys.executable, str(WORKER), address, task_queue, str(root / "s.db")]
    with subprocess.Popen([*command, str(spans_file)], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            yield spans_file
        finally:
            proc.terminate()
            proc.communicate(timeout=30)


async def test_a_temporal_run_is_a_descendant_of_the_callers_span(
    spans: Spans, temporal_address: str, tmp_path: Path
) -> None:
    task_queue = f"traced-{uuid.uuid4().hex[:8]}"
    with traced_worker(temporal_address, task_queue, tmp_path) as spans_file:
        tracer = spans.provider.get_tracer("caller")
        client = await Client.connect(temporal_address, interceptors=[TracingInterceptor(tracer)])
        runs = TemporalRuns(client, task_queue=task_queue)
        with tracer.start_as_current_span("caller") as caller:
            handle = await runs.start("agent", "hello there", session="traced")
            with anyio.fail_after(30):
                result = await handle.result()
        assert result.status == "finished"
    lines = [json.loads(line) for line in spans_file.read_text().splitlines()]
    (run,) = [line for line in lines if line["name"] == "invoke_agent llm_worker"]
    assert int(run["context"]["trace_id"], 16) == caller.get_span_context().trace_id
    by_id = {line["context"]["span_id"]: line for line in lines}
    parent = by_id.get(run["parent_id"])
    assert parent is not None
    assert parent["name"].startswith("RunActivity:")
