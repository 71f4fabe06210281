"""The command line's start-up and Ctrl-C, as a person meets them: wall time of real processes.

* ``llm-worker --version`` and ``--help``: process start to exit;
* ``llm-worker run`` on the offline model: process start to the first text on stdout;
* SIGINT while the answer streams: the signal to the process having exited.

Each is the median of several runs, with the package's bytecode cached as an installed package
has it (a warm-up run writes it). The baseline, a bare ``python -c pass`` measured in the
same run on the same interpreter, is subtracted: targets are on the time llm-worker adds
(``--version``/``--help`` ≤ 0.15 s, first text ≤ 0.3 s) and on the SIGINT exit (≤ 100 ms).
"""

from __future__ import annotations

import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._common import Row, Target

SECTION = "command line (start-up and Ctrl-C, real processes)"
CLI = [sys.executable, "-m", "llm_worker"]
RUNS = 9


def _env(db: Path) -> dict[str, str]:
    # Bytecode as an installed package has it (pip compiles at install, Python caches on first
    # import): an inherited PYTHONDONTWRITEBYTECODE would time compiling every module instead.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(LLM_WORKER_DB=str(db), LLM_WORKER_OFFLINE_PACE="0.03", PYTHONUNBUFFERED="1")
    return env


def _to_exit(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def _first_text(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready and os.read(proc.stdout.fileno(), 4096):
            return
    raise RuntimeError("no text from llm-worker run")


def _run_to_first_text(env: dict[str, str], n: int) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*CLI, "run", "--session", f"bench-{n}", "tell me a long story"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    _first_text(proc)
    seconds = time.perf_counter() - started
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()
    return seconds


def _sigint_to_exit(env: dict[str, str], n: int) -> float:
    proc = subprocess.Popen(
        [*CLI, "run", "--session", f"stop-{n}", "tell me a long story"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    _first_text(proc)
    time.sleep(0.2)  # mid-answer
    started = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    seconds = time.perf_counter() - started
    assert proc.stdout is not None
    proc.stdout.close()
    if code != 130:
        raise RuntimeError(f"llm-worker run ended with {code} after SIGINT, not 130")
    return seconds


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def run(runs: int = RUNS) -> list[Row]:
    with tempfile.TemporaryDirectory() as directory:
        env = _env(Path(directory) / "bench.db")
        _to_exit([*CLI, "--version"], env)  # warm the caches (bytecode, page cache)
        _run_to_first_text(env, -1)
        baseline = [_to_exit([sys.executable, "-c", "pass"], env) for _ in range(runs)]
        version = [_to_exit([*CLI, "--version"], env) for _ in range(runs)]
        help_ = [_to_exit([*CLI, "--help"], env) for _ in range(runs)]
        first = [_run_to_first_text(env, n) for n in range(runs)]
        stop = [_sigint_to_exit(env, n) for n in range(runs)]
    base = _median_ms(baseline)
    rows = [Row(SECTION, "python -c pass (baseline)", {"median_ms": base}, f"{base:.0f} ms")]
    for subject, values, limit in (
        ("llm-worker --version", version, 150),
        ("llm-worker --help", help_, 150),
        ("llm-worker run (offline) to first text", first, 300),
    ):
        median = _median_ms(values)
        ratio = round(median / base, 2) if base else None
        metrics = {
            "median_ms": median,
            "added_ms": round(median - base, 1),
            "ratio_to_baseline": ratio,
        }
        rows.append(
            Row(
                SECTION,
                subject,
                metrics,
                f"{median:.0f} ms (+{median - base:.0f} ms over python, x{ratio})",
                (Target("added_ms", "<=", limit, " ms"),),
            )
        )
    stop_ms = _median_ms(stop)
    rows.append(
        Row(
            SECTION,
            "llm-worker run: SIGINT mid-answer to exit",
            {"median_ms": stop_ms, "max_ms": round(max(stop) * 1000, 1)},
            f"{stop_ms:.0f} ms (max {max(stop) * 1000:.0f} ms)",
            (Target("median_ms", "<=", 100, " ms"),),
        )
    )
    return rows


if __name__ == "__main__":
    from ._common import print_table

    print_table(run())
