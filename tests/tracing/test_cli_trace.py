"""``llm-worker run --trace FILE`` then ``llm-worker trace FILE``, as real processes."""

from __future__ import annotations

import http.server
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from cli._helpers import cli_env, read_until, run_cli, start_cli

pytestmark = pytest.mark.timeout(90)


def test_a_traced_run_with_a_tool_prints_as_a_tree(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "s.db")
    spans = tmp_path / "spans.jsonl"
    done = run_cli(
        "run", "--tools", "demo", "--trace", str(spans), "get_weather for Paris", env=env
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in spans.read_text().splitlines()]
    assert {line["name"] for line in lines} >= {"invoke_agent llm_worker", "chat offline"}
    assert "get_weather for Paris" not in spans.read_text()  # no content unless asked

    printed = run_cli("trace", str(spans), env=env)
    assert printed.returncode == 0, printed.stderr
    tree = printed.stdout.splitlines()
    assert tree[0].startswith("trace 0x")
    assert tree[1].startswith("invoke_agent llm_worker")
    assert "finished" in tree[1]
    assert tree[2].startswith("├─ chat offline")
    assert "turn 1" in tree[2]
    assert tree[3].startswith("├─ execute_tool get_weather")
    assert " ok" in tree[3]
    assert tree[4].startswith("└─ chat offline")
    assert "turn 2" in tree[4]


def test_a_run_stopped_by_ctrl_c_is_explained_in_the_printed_trace(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "s.db", pace=0.02)
    spans = tmp_path / "spans.jsonl"
    with start_cli("run", "--trace", str(spans), "tell me a long story", env=env) as process:
        try:
            read_until(process, b"offline model")
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 130
    printed = run_cli("trace", str(spans), env=env)
    assert printed.returncode == 0, printed.stderr
    text = printed.stdout
    assert "invoke_agent llm_worker" in text
    assert "cancelled" in text
    assert "cause: interrupted (keyboard_interrupt): interrupted by Ctrl-C" in text
    assert "noticed while streaming" in text
    assert "cancel() called in thread MainThread" in text
    kept = next(line for line in text.splitlines() if "kept:" in line)
    assert "0 chars of interrupted text" not in kept
    assert "interrupted" in next(line for line in text.splitlines() if "chat offline" in line)


def test_trace_content_puts_the_prompt_into_the_spans(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "s.db")
    spans = tmp_path / "spans.jsonl"
    done = run_cli("run", "--trace", str(spans), "--trace-content", "a private prompt", env=env)
    assert done.returncode == 0, done.stderr
    assert "a private prompt" in spans.read_text()


def test_trace_of_a_file_without_spans_is_an_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n")
    printed = run_cli("trace", str(junk), env=cli_env(tmp_path / "s.db"))
    assert printed.returncode == 1
    assert "holds no spans" in printed.stderr


class _Collector(http.server.BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector: keeps each request's path and body."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    _Collector.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Collector.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_otel_traces_exporter_otlp_sends_the_spans_to_the_collector(
    tmp_path: Path, collector: tuple[str, list[tuple[str, bytes]]]
) -> None:
    endpoint, received = collector
    env = cli_env(
        tmp_path / "s.db",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="traced-agent",
    )
    done = run_cli("run", "hello", env=env)
    assert done.returncode == 0, done.stderr
    assert [path for path, _ in received] == ["/v1/traces"]
    body = received[0][1]
    assert b"invoke_agent llm_worker" in body
    assert b"traced-agent" in body
