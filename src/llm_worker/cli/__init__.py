"""The ``llm-worker`` command line: ``run``, ``chat``, ``sessions``, ``show``, ``delete``,
``models``, ``serve``.

How it is put together (each module states its own invariants):

* `_app` — the parser and `main`: every error becomes one ``llm-worker: …`` line and a status.
* `_common` — exit statuses, `CLIError`, stderr lines, consoles: what every command shares.
* `_config` — flags, environment and a session's stored settings → store, session, model, tools.
* `_tools` — ``--tools``: the demo tools, a ``module:attribute`` or a ``path/to/file.py``.
* `_runtime` — the event-loop thread, Ctrl-C and SIGTERM, and running one turn.
* `_views`, `_markdown`, `_status` — one turn's events as JSON lines, plain text or a styled
  terminal (Markdown rendered live, a status line with elapsed times).
* `_input` — the chat's input: lines, pasted blocks and ``/multiline``.
* `_safe` — the one sanitiser: what came from a model, a tool, a server or a stored session
  is printed with control characters, bidi overrides and keys made harmless.
* `_run`, `_chat`, `_sessions`, `_models`, `_serve` — the commands.

The main thread parses flags, reads input and handles signals; the event loop runs in a helper
thread. Each turn has its own cancel token, cancelled by Ctrl-C; every committed item is on disk
before the worker goes on, so whatever stops a turn, what was said is kept.

A Ctrl-C at any moment ends the process quietly with status 130: until a command has something
to keep, `main`'s first act makes SIGINT leave at once (nothing is printed, nothing is lost).
This module imports nothing but the standard library's `os` and `signal`, so that holds from
the first milliseconds.

Exit status: 0 done; 1 the run failed, or a runtime problem; 2 bad usage or configuration;
124 ``--timeout`` passed; 130 interrupted by Ctrl-C; 141 the output pipe was closed; 143 SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys

TYPE_CHECKING = False  # not `typing`'s: importing typing would slow every start-up
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

__all__ = ["build_parser", "console", "main"]


def _leave_quietly(signum: int, frame: object) -> None:
    os._exit(143 if signum == signal.SIGTERM else 130)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    previous = None
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not embedded elsewhere
        try:
            previous = signal.signal(signal.SIGINT, _leave_quietly)
        except ValueError:  # not the main thread
            previous = None
    try:
        from ._app import main as run_command_line

        return run_command_line(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def console() -> None:
    """The ``llm-worker`` program: `main`, then leave at once with its status.

    Everything is saved and closed when `main` returns; what is left is the interpreter tearing
    down the library's modules, which took most of the time between a Ctrl-C and the exit
    (~0.5 s on a loaded machine). So the streams are flushed and the process ends there.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            code = code or 141
        except (OSError, ValueError):
            pass
    os._exit(code)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``llm-worker`` (exposed for documentation and tests)."""
    from ._app import build_parser as build

    return build()
