"""``llm-worker serve`` as a process: it serves the page and the API, SIGINT stops it cleanly,
and a chat started in the browser continues on the command line (same sessions)."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from llm_worker.store import SQLiteStore

from .conftest import chat_body, free_port

MODULE = [sys.executable, "-m", "llm_worker"]
_SCRUBBED = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LLM_WORKER_MODEL", "LLM_WORKER_DB")


def cli_env(db: Path) -> dict[str, str]:
    """A CLI process's environment: its own database, a fast offline model, no keys."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(LLM_WORKER_DB=str(db), LLM_WORKER_OFFLINE_PACE="0.001", PYTHONUNBUFFERED="1")
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODULE, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_serve(db: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """Start the server; return it and the URL it printed."""
    process = subprocess.Popen(
        [*MODULE, "serve", "--db", str(db), *args],
        env=cli_env(db),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 0.5)
        if ready:
            line = process.stderr.readline()
            found = re.search(r"serving (http://\S+)", line)
            if found:
                return process, found.group(1)
        assert process.poll() is None, process.communicate()
    process.kill()
    raise AssertionError("serve printed no URL")


def finish(process: subprocess.Popen[str]) -> str:
    """Wait for the process (killing it after 20 s); its stderr. Closes its pipes."""
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err


def wait_ready(url: str, **headers: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url, timeout=2, headers=headers).status_code < 500:
                return
        except httpx2.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_serve_serves_the_page_and_sigint_stops_it_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "chats.db"
    started = run_cli("run", "--session", "from-cli", "--db", str(db), "hello", env=cli_env(db))
    assert started.returncode == 0, started.stderr
    port = free_port()
    process, url = start_serve(db, "--port", str(port), "--tools", "demo")
    try:
        assert url == f"http://127.0.0.1:{port}/"
        wait_ready(url)
        page = httpx2.get(url, timeout=10)
        assert page.status_code == 200
        assert 'id="stop"' in page.text
        from_cli = httpx2.get(f"{url}api/chats/from-cli", timeout=10).json()  # CLI → web
        assert [m["role"] for m in from_cli["messages"]] == ["user", "assistant"]
        body = chat_body("from-web", "hello from the page")
        with httpx2.stream("POST", f"{url}api/chat", json=body, timeout=30) as response:
            assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        process.send_signal(signal.SIGINT)
    finally:
        err = finish(process)
    assert process.returncode == 0, err
    assert "stopped" in err
    assert "Traceback" not in err

    done = run_cli("run", "--session", "from-web", "--db", str(db), "and more", env=cli_env(db))
    # web → CLI
    assert done.returncode == 0, done.stderr
    with SQLiteStore(db) as store:
        texts = [getattr(item, "text", "") for item in store.load_history("from-web")]
    assert "hello from the page" in texts
    assert "and more" in texts


def test_serve_beyond_loopback_requires_the_printed_token(tmp_path: Path) -> None:
    db = tmp_path / "chats.db"
    port = free_port()
    process, url = start_serve(db, "--host", "0.0.0.0", "--port", str(port))
    try:
        token = url.split("#token=")[1]
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/")
        assert httpx2.get(f"{base}/api/chats", timeout=10).status_code == 401
        auth = {"authorization": f"Bearer {token}"}
        assert httpx2.get(f"{base}/api/chats", headers=auth, timeout=10).status_code == 200
        process.send_signal(signal.SIGINT)
    finally:
        finish(process)
    assert process.returncode == 0
    assert os.path.exists(db)


def test_a_chat_killed_mid_tool_reopens_like_the_cli_reopens_it(tmp_path: Path) -> None:
    db = tmp_path / "chats.db"
    process, url = start_serve(db, "--port", str(free_port()), "--tools", "demo")
    try:
        wait_ready(url)
        body = chat_body("killed", "use slow_count to 40")
        with httpx2.stream("POST", f"{url}api/chat", json=body, timeout=30) as response:
            for line in response.iter_lines():
                if '"tool-input-available"' in line:
                    process.kill()  # kill -9 while the tool runs
                    break
    finally:
        finish(process)
    again, url = start_serve(db, "--port", str(free_port()))
    try:
        wait_ready(url)
        chat = httpx2.get(f"{url}api/chats/killed", timeout=10).json()
        assert chat["status"] == "crashed"
        with httpx2.stream(
            "POST", f"{url}api/chat", json=chat_body("killed", "hello again"), timeout=30
        ) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert '"finish"' in lines[-2]
        again.send_signal(signal.SIGINT)
    finally:
        finish(again)
    with SQLiteStore(db) as store:
        history = store.load_history("killed")
    from llm_worker.items import ToolResult
    from llm_worker.testing import history_violations

    assert history_violations(history) == []
    (result,) = [item for item in history if isinstance(item, ToolResult)]
    assert result.status == "cancelled"  # answered as the CLI answers a crashed call


def test_serve_reports_bad_settings_in_one_line_before_listening(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    foreign.write_text("not a database")
    db = tmp_path / "chats.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        cases = [
            (["--db", str(foreign)], "is not an llm-worker database"),
            (["--db", str(db), "--port", busy], "cannot listen on 127.0.0.1"),
            (["--db", str(db), "--model", "nope:x"], "unknown model spec"),
            (["--db", str(db), "--token", "short"], "at least 8 characters"),
            (["--db", str(db), "--allow-origin", "evil"], "scheme://host"),
        ]
        for args, words in cases:
            done = run_cli("serve", *args, env=cli_env(db))
            assert done.returncode in (1, 2), (args, done.stderr)
            assert words in done.stderr, (args, done.stderr)
            assert "Traceback" not in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
