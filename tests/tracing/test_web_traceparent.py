"""The web service continues the caller's trace: a W3C ``traceparent`` on ``POST /api/chat``
parents the run it starts (the server is real, on a loopback port, in its own thread)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from llm_worker.models import OfflineModel
from web.conftest import chat_body, read_stream, start_server

from .conftest import Spans

pytestmark = pytest.mark.timeout(60)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


async def test_a_chat_request_with_a_traceparent_runs_inside_that_trace(
    spans: Spans, anyio_backend: Any, tmp_path: Path
) -> None:
    server = start_server(
        anyio_backend, tmp_path / "chats.db", model_factory=lambda: OfflineModel(pace=0.001)
    )
    try:
        async with httpx2.AsyncClient(timeout=30) as client:
            headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
            body = chat_body("traced", "hello")
            async with client.stream(
                "POST", f"{server.url}/api/chat", json=body, headers=headers
            ) as response:
                await read_stream(response)
            async with client.stream(
                "POST", f"{server.url}/api/chat", json=chat_body("untraced", "hi")
            ) as response:
                await read_stream(response)
        with anyio.fail_after(10):
            while len(spans.named("invoke_agent")) < 2:
                await anyio.sleep(0.01)
    finally:
        server.stop()
    traced, untraced = sorted(spans.named("invoke_agent"), key=lambda s: s.start_time or 0)
    assert traced.context is not None
    assert traced.parent is not None
    assert f"{traced.context.trace_id:032x}" == TRACE_ID
    assert f"{traced.parent.span_id:016x}" == PARENT_ID
    assert traced.parent.is_remote
    assert untraced.context is not None
    assert f"{untraced.context.trace_id:032x}" != TRACE_ID
    assert untraced.parent is None
