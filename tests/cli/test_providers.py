"""The CLI against the fake provider server on loopback: real HTTP, real SDKs, no network."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_worker.items import UserMessage
from llm_worker.testing import FakeProviderServer
from llm_worker.testing._fake_replies import Reply

from ._helpers import (
    assistant_messages,
    cli_env,
    history,
    one_error_line,
    read_until,
    run_cli,
    start_cli,
)

KEY = "sk-test-DO-NOT-STORE-0123456789"


@pytest.fixture
def server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as fake:
        yield fake
    assert fake.errors == []


def openai_args(server: FakeProviderServer, *rest: str) -> list[str]:
    return ["run", "--model", "openai:gpt-4o-mini", "--base-url", server.openai_base_url, *rest]


def test_openai_chat_answer_is_streamed_and_stored(
    tmp_path: Path, server: FakeProviderServer
) -> None:
    db = tmp_path / "s.db"
    server.enqueue(Reply.openai_text(["Hello", " from", " the fake server."]))
    done = run_cli(
        *openai_args(server, "--session", "o", "hi there"), env=cli_env(db, OPENAI_API_KEY=KEY)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello from the fake server.\n"
    request = server.requests[0]
    assert request.json["model"] == "gpt-4o-mini"
    assert request.json["stream"] is True
    assert request.json["messages"][-1] == {"role": "user", "content": "hi there"}
    assert request.headers["authorization"] == f"Bearer {KEY}"
    items = history(db, "o")
    assert isinstance(items[0], UserMessage)
    assert assistant_messages(items)[0].text == "Hello from the fake server."
    # The key is used, never stored; the endpoint is remembered like the model (issue 18).
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert KEY.encode() not in stored
    assert server.openai_base_url.encode() in stored
    listed = run_cli("sessions", env=cli_env(db)).stdout
    assert "openai:gpt-4o-mini" in listed


def test_the_stored_model_is_used_when_continuing(
    tmp_path: Path, server: FakeProviderServer
) -> None:
    db = tmp_path / "s.db"
    env = cli_env(db, OPENAI_API_KEY=KEY)
    server.enqueue(Reply.openai_text("One."), Reply.openai_text("Two."))
    assert run_cli(*openai_args(server, "--session", "o", "first"), env=env).returncode == 0
    again = run_cli(
        "run", "--base-url", server.openai_base_url, "--session", "o", "second", env=env
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout == "Two.\n"
    contents = [m["content"] for m in server.requests[1].json["messages"]]
    assert contents[-3:] == ["first", "One.", "second"]


def test_anthropic(tmp_path: Path, server: FakeProviderServer) -> None:
    db = tmp_path / "s.db"
    server.enqueue(Reply.anthropic_text(["Bonjour", " !"]))
    done = run_cli(
        "run",
        "--model",
        "anthropic:claude-haiku-4-5",
        "--base-url",
        server.anthropic_base_url,
        "--session",
        "a",
        "salut",
        env=cli_env(db, ANTHROPIC_API_KEY=KEY),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Bonjour !\n"
    assert server.requests[0].path == "/v1/messages"


def test_gemini(tmp_path: Path, server: FakeProviderServer) -> None:
    db = tmp_path / "s.db"
    server.enqueue(Reply.gemini_text(["Hallo", " !"]))
    done = run_cli(
        "run",
        "--model",
        "gemini:gemini-2.5-flash",
        "--base-url",
        server.gemini_base_url,
        "--session",
        "g",
        "hallo",
        env=cli_env(db, GEMINI_API_KEY=KEY),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hallo !\n"
    request = server.requests[0]
    assert request.path == server.gemini_path("gemini-2.5-flash")
    assert request.headers["x-goog-api-key"] == KEY
    assert request.json["contents"] == [{"role": "user", "parts": [{"text": "hallo"}]}]
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert KEY.encode() not in stored


def test_ctrl_c_mid_stream_keeps_the_text_and_closes_the_connection(
    tmp_path: Path, server: FakeProviderServer
) -> None:
    db = tmp_path / "s.db"
    server.enqueue(Reply.openai_text(["word "] * 400, pace=0.02))
    proc = start_cli(
        *openai_args(server, "--session", "o", "talk"), env=cli_env(db, OPENAI_API_KEY=KEY)
    )
    shown = read_until(proc, b"word word word")
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "interrupted" in one_error_line(err.decode())
    message = assistant_messages(history(db, "o"))[0]
    assert message.interrupted
    assert message.text.strip() == (shown + rest).decode().strip()
    stats = server.wait_for(lambda s: s.active_connections == 0, timeout=10)
    assert stats.streams_completed == 0


def test_http_errors_are_one_line(tmp_path: Path, server: FakeProviderServer) -> None:
    server.enqueue(Reply.error(401, message="Incorrect API key provided"))
    done = run_cli(*openai_args(server, "hi"), env=cli_env(tmp_path / "s.db", OPENAI_API_KEY=KEY))
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "401" in line
    assert KEY not in line
