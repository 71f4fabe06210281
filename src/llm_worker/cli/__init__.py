"""The ``llm-worker`` command line: ``run``, ``chat``, ``sessions``, ``show``, ``delete``,
``models``, ``serve``.

How it is put together (each module states its own invariants):

* `_app` — the parser and `main`: every error becomes one ``llm-worker: …`` line and a status.
* `_common` — exit statuses, `CLIError`, stderr lines, consoles: what every command shares.
* `_config` — flags, environment and a session's stored settings → store, session, model, tools.
* `_tools` — ``--tools``: the demo tools, a ``module:attribute`` or a ``path/to/file.py``.
* `_runtime` — the event-loop thread, Ctrl-C and SIGTERM, and running one turn.
* `_views` — one turn's events as JSON lines, plain text or a styled terminal (Markdown
  rendered live, a status line with elapsed times).
* `_input` — the chat's input: lines, pasted blocks and ``/multiline``.
* `_safe` — the one sanitiser: what came from a model, a tool, a server or a stored session
  is printed with control characters, bidi overrides and keys made harmless.
* `_run`, `_chat`, `_sessions`, `_models`, `_serve` — the commands.

The main thread parses flags, reads input and handles signals; the event loop runs in a helper
thread. Each turn has its own cancel token, cancelled by Ctrl-C; every committed item is on disk
before the worker goes on, so whatever stops a turn, what was said is kept.

A Ctrl-C at any moment ends the process quietly with status 130: until a command has something
to keep, SIGINT leaves at once (nothing is printed, nothing is lost). Started as the program,
this module's first lines arrange it, before the rest of the command line is imported; called
by another program, `main` does for the time it runs. This module imports only the standard
library's `os`, `sys` and `_signal`, so that holds from the first milliseconds.

Exit status: 0 done; 1 the run failed, or a runtime problem; 2 bad usage or configuration;
124 ``--timeout`` passed; 130 interrupted by Ctrl-C; 141 the output pipe was closed; 143 SIGTERM.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # `signal` without `enum`: ready at once
import os
import sys

TYPE_CHECKING = False  # not `typing`'s: importing typing would slow every start-up
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

__all__ = ["build_parser", "console", "main"]


def _leave_quietly(signum: int, frame: object) -> None:
    os._exit(143 if signum == _signal.SIGTERM else 130)


def _quiet_until_main() -> None:
    """Started as the program (the ``llm-worker`` script, ``python -m llm_worker``): a Ctrl-C
    from now on leaves quietly, even while the rest of the command line is still being
    imported. Imported by another program, nothing changes."""
    program = sys.argv[0] if sys.argv else ""
    if program.endswith(("llm-worker", os.path.join("llm_worker", "__main__.py"))):
        try:
            if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
                _signal.signal(_signal.SIGINT, _leave_quietly)
        except ValueError:  # not the main thread
            pass


_quiet_until_main()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    previous = None
    if _signal.getsignal(_signal.SIGINT) in (_signal.default_int_handler, _leave_quietly):
        try:
            previous = _signal.signal(_signal.SIGINT, _leave_quietly)
        except ValueError:  # not the main thread
            previous = None
    try:
        from ._app import main as run_command_line

        return run_command_line(argv)
    finally:
        if previous is not None:
            _signal.signal(_signal.SIGINT, previous)


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
