"""Real MCP servers for the tests: the probe server (written with the SDK) over stdio and over
streamable HTTP on a free loopback port, and the PyPI ``mcp-server-time``.

With ``CI=true`` a missing server is a failure, never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_worker.mcp import MCPServer

PROBE = str(Path(__file__).parent / "servers" / "probe.py")


def missing(what: str) -> None:
    """Skip locally; fail under CI, where every real component must be there."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is missing (CI=true: a missing server is a failure)")
    pytest.skip(f"{what} is missing")


class ProbeLog:
    """What the probe server recorded: one JSON object a line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def cancels(self) -> list[dict[str, Any]]:
        return [
            e["params"] for e in self.events() if e.get("notification") == "notifications/cancelled"
        ]

    def pids(self) -> list[int]:
        return [e["started"] for e in self.events() if "started" in e]


@pytest.fixture
def probe_log(tmp_path: Path) -> ProbeLog:
    return ProbeLog(tmp_path / "probe.log")


def probe_env(log: ProbeLog, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_PROBE_")}
    env["MCP_PROBE_LOG"] = str(log.path)
    env.update(extra)
    return env


@pytest.fixture
def probe(probe_log: ProbeLog) -> Callable[..., MCPServer]:
    """``probe(**env)``: an `MCPServer` for the probe server over stdio."""

    def make(name: str = "probe", **extra: str) -> MCPServer:
        return MCPServer.stdio(
            sys.executable, args=[PROBE], env=probe_env(probe_log, **extra), name=name
        )

    return make


@pytest.fixture
def time_server() -> MCPServer:
    """The real ``mcp-server-time`` from PyPI (installed by the test extra)."""
    beside_python = Path(sys.executable).parent / "mcp-server-time"
    command = shutil.which("mcp-server-time") or str(beside_python)
    if not Path(command).exists():
        missing("mcp-server-time")
    return MCPServer.stdio(command, args=["--local-timezone", "UTC"], name="time")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HTTPProbe:
    """The probe server over streamable HTTP, as a subprocess; ``restart()`` drops and reopens."""

    def __init__(self, log: ProbeLog) -> None:
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, PROBE, "--http", str(self.port)],
            env=probe_env(self.log),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the HTTP probe server exited at start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the HTTP probe server did not listen within 30s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def http_probe(probe_log: ProbeLog) -> Iterator[HTTPProbe]:
    """A probe HTTP service of the test's own (one that the test may drop)."""
    server = HTTPProbe(probe_log)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def shared_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPProbe]:
    """One probe HTTP service for the tests that only call it (a process start costs seconds)."""
    server = HTTPProbe(ProbeLog(tmp_path_factory.mktemp("shared-http") / "probe.log"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def web(shared_http: HTTPProbe) -> MCPServer:
    """An `MCPServer` for the shared probe HTTP service, named "probe"."""
    return MCPServer.http(shared_http.url, name="probe")


#: Children this process had when the current test began (servers other tests keep for the
#: session, such as the Temporal dev server): not this test's to account for.
_EARLIER_CHILDREN: set[int] = set()


@pytest.fixture(autouse=True)
def _earlier_children() -> None:
    _EARLIER_CHILDREN.clear()
    _EARLIER_CHILDREN.update(_live_children())


def children() -> list[int]:
    """Pids of the live (not zombie) children started since the test began; HTTP services left
    out."""
    return [pid for pid in _live_children() if pid not in _EARLIER_CHILDREN]


def _live_children() -> list[int]:
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            state, parent = fields[0], int(fields[1])
            if parent == me and state != "Z":
                command = (entry / "cmdline").read_bytes().split(b"\0")
                if b"--http" not in command:
                    found.append(int(entry.name))
        except (OSError, ValueError):
            continue  # gone meanwhile
    return found


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
