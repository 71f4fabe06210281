"""What every command shares: exit statuses, `CLIError`, and the standard streams.

Invariants:
* A problem for the user is one ``llm-worker: …`` line on stderr (`stderr_line`), never a
  traceback; writing it never raises, even when stderr is closed. The line is made safe by
  `_safe.visible` (it often quotes a server, a model or a path): no escape sequence and no
  key reaches the terminal through it. Log records of the library (warnings and worse) are
  written the same way while a command runs (`log_to_stderr`).
* Each exit status means one thing (see `llm_worker.cli`); `describe_error` is the one place
  that maps a run's error to its status, for ``run`` and ``chat`` alike.
* Nothing here imports rich or the library's heavy modules at import time: ``--help`` and usage
  errors stay fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from ._safe import visible

if TYPE_CHECKING:
    import logging

    from rich.console import Console

    from ..errors import RunError

PROG = "llm-worker"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
EXIT_TERMINATED = 143
SIGTERM_REASON = "terminated (SIGTERM)"  # the runtime cancels with it; errors match it


# The registry's list of specs (`models._registry.SPEC_HELP`; a test keeps them the same),
# written out here so that ``--help`` does not import the models and pydantic.
MODEL_HELP = (
    '"offline" (built in, no key), "offline:reasoning", "openai:<model>", '
    '"openai-responses:<model>", "anthropic:<model>", "gemini:<model>", "ollama:<model>"'
)


class CLIError(Exception):
    """A problem to report as one line on stderr, with an exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def error_line(message: str) -> None:
    stderr_line(f"error: {message}")


def stderr_line(message: str) -> None:
    """One ``llm-worker: …`` line on stderr (collapsed to one line whatever the message, and
    made safe to print: controls escaped, keys redacted)."""
    text = visible(" ".join(message.split()), one_line=True)
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{PROG}: {text}\n")
        sys.stderr.flush()


def _stderr_handler() -> logging.Handler:
    """Log records as ``llm-worker: warning: …`` lines, through `stderr_line`.

    The store's records are left out: the commands report its failures themselves, once
    (`PersistenceFailed` from closing the session, the chat's note after a turn). Made here,
    not at import: ``--help`` does not load `logging`.
    """
    import logging

    class StderrLines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name == "llm_worker.store" or record.name.startswith("llm_worker.store."):
                return
            try:
                message = record.getMessage()
            except Exception:  # a bad format string in a record: show what there is
                message = str(record.msg)
            stderr_line(f"{record.levelname.lower()}: {message}")

    return StderrLines(logging.WARNING)


@contextlib.contextmanager
def log_to_stderr() -> Iterator[None]:
    """While a command runs, the library's warnings (and worse) are safe stderr lines, instead
    of Python's raw last-resort output."""
    import logging

    library = logging.getLogger("llm_worker")
    handler = _stderr_handler()
    library.addHandler(handler)
    try:
        yield
    finally:
        library.removeHandler(handler)


def silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush is quiet."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def isatty(stream: IO[str] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # closed
        return False


def consoles() -> tuple[Console, Console]:
    """Rich consoles for stdout and stderr (rich is imported only when output is a terminal)."""
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False), Console(file=sys.stderr, highlight=False)


def describe_error(
    error: RunError, timeout: float | None, where: str | None = None, heard: bool = False
) -> tuple[str, int]:
    """The stderr line and exit status for a run that did not finish.

    ``where``: the model's endpoint, named when it could not be reached; ``heard``: the model
    had answered something this turn, so a connection error is a connection that broke.
    """
    from ..errors import Cancelled, ModelError

    if isinstance(error, Cancelled):
        if error.kind == "deadline":
            return f"timed out after {timeout:g}s" if timeout else "timed out", EXIT_TIMEOUT
        if error.kind == "keyboard_interrupt":
            return "interrupted", EXIT_INTERRUPTED
        if error.reason == SIGTERM_REASON:
            return "terminated", EXIT_TERMINATED
        return f"stopped ({error.reason or error.kind})", EXIT_FAILED
    if isinstance(error, ModelError) and where:
        return f"error: {_model_error(str(error), where, heard)}", EXIT_FAILED
    return f"error: {error}", EXIT_FAILED


def _model_error(message: str, where: str, heard: bool) -> str:
    """A provider's connection error, saying which URL and whether it had answered."""
    provider, found, detail = message.partition(" could not be reached: ")
    if not found or " " in provider:
        return message if where in message else f"{message} (at {where})"
    if heard:
        return f"the connection to {where} broke during the answer: {detail}"
    return f"{where} could not be reached: {detail}"
