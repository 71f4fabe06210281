"""``llm-worker run``: one prompt (or ``--resume``), streamed to stdout, in one session.

Invariants:
* The prompt is read and every flag checked before the database is opened: a usage mistake
  changes nothing on disk.
* The session stays locked from open to exit; every item the worker commits is written before
  the worker goes on, so whatever ends the turn, what was said is in the session.
* A Ctrl-C before the turn starts is a plain `KeyboardInterrupt` (exit 130, nothing said yet);
  during the turn it cancels the turn (see `_runtime`), which ends with exit 130 and a line
  saying what was kept. ``--timeout`` ends the same way with 124, SIGTERM with 143.
* A write to the session that fails during the turn does not stop it (the store keeps the
  items and retries them); after the turn is reported, closing the session tries once more and
  a failure is one ``error:`` line with status 1 (`PersistenceFailed`).
* The prompt is made valid text where it enters: undecodable bytes (argument or stdin) become
  U+FFFD. Piped text and a prompt argument are one message: the piped text, then the prompt
  (as ``llm`` does).
* Which session was used is always said: the first ``--json`` line, or one stderr line when
  stdout is not a terminal (a terminal shows it in the status line).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .._frontend import session_worker
from . import _config
from ._common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    PROG,
    CLIError,
    consoles,
    describe_error,
    isatty,
    stderr_line,
)
from ._runtime import (
    Interrupts,
    close_model,
    close_tool_sources,
    endpoint,
    event_loop,
    leaving,
    run_turn,
)
from ._safe import valid_text, visible
from ._views import JsonView, PlainView, View, status_line, terminal_view

if TYPE_CHECKING:
    from ..store import Session
    from ._runtime import Turn


def cmd_run(args: argparse.Namespace) -> int:
    prompt = _read_prompt(args)
    if args.resume and not (args.session or args.continue_):
        raise CLIError("--resume needs --session NAME (or --continue)", EXIT_USAGE)
    args.attachments = _attachments(args.attach, args.resume)
    with _config.prepared(args, "run") as ready, ready.open() as session:
        return _run_in_session(args, ready, session, prompt)


def _read_prompt(args: argparse.Namespace) -> str | None:
    if args.resume:
        if args.prompt is not None:
            raise CLIError("give either a prompt or --resume, not both", EXIT_USAGE)
        return None
    prompt: str | None = args.prompt
    piped = sys.stdin is not None and not isatty(sys.stdin)
    if prompt is None or prompt == "-":
        if not piped:
            raise CLIError("no prompt: pass one as an argument or on stdin", EXIT_USAGE)
        prompt = _read_stdin()
    elif piped:
        context = _read_stdin()
        if context.strip():
            prompt = f"{context.rstrip()}\n\n{prompt}"
    if not prompt.strip():
        raise CLIError("the prompt is empty", EXIT_USAGE)
    return valid_text(prompt)


def _attachments(sources: list[str], resume: bool) -> list[object]:
    """The ``--attach`` files and URLs as attachments, read before anything else is opened."""
    if sources and resume:
        raise CLIError("--attach goes with a prompt, not with --resume", EXIT_USAGE)
    from ..attachments import attach

    try:
        return [attach(source) for source in sources]
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot attach: {exc}", EXIT_USAGE) from exc


def _read_stdin() -> str:
    """All of stdin as text; bytes that are not UTF-8 become U+FFFD instead of an error."""
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:  # replaced by a text-only stream (tests, embedding)
        return str(sys.stdin.read())
    data: bytes = binary.read()
    return data.decode("utf-8", "replace")


def _run_in_session(
    args: argparse.Namespace, ready: _config.Prepared, session: Session, prompt: str | None
) -> int:
    model, spec = ready.model, ready.spec
    terminal = isatty(sys.stdout) and not args.json
    if prompt is None:
        if not session.resumable:
            raise CLIError(f"session {session.name!r} has nothing to resume")
    else:
        session.settle_pending()
    worker = session_worker(session, model, ready.tools, settings=ready.settings)
    view: View
    if args.json:
        view = JsonView(sys.stdout)
        view.session_line(session.name, spec)
    elif terminal:
        stdout, stderr = consoles()
        if session.recovery is not None:
            line = visible(f"{PROG}: {session.recovery.describe()}", one_line=True)
            stderr.print(line, style="dim", markup=False, highlight=False)
        view = terminal_view(stdout, plain=args.plain)
    else:
        view = PlainView(sys.stdout)
    interrupts = Interrupts()
    interrupts.install()
    try:
        with event_loop() as portal:
            try:
                turn = run_turn(
                    portal, interrupts, worker, prompt, args.timeout, view, args.attachments
                )
            finally:
                view.finish()
                with leaving():
                    portal.call(close_model, model)
                    portal.call(close_tool_sources, ready.tools)
    finally:
        interrupts.uninstall()
    code = _report(args, session, spec, turn, view, terminal, endpoint(model))
    if session.unsaved:
        # A write failed during the turn (the store kept the items and the turn went on):
        # one last try; if it fails too, `main` reports it as one error line, status 1.
        session.close()
    return code


def _report(
    args: argparse.Namespace,
    session: Session,
    spec: str,
    turn: Turn,
    view: View,
    terminal: bool,
    where: str | None,
) -> int:
    """Say how the turn ended (stderr, and the status line on a terminal); return the status."""
    if view.broken:
        return EXIT_BROKEN_PIPE
    if terminal and turn.result is not None:
        line = visible(status_line(spec, turn, session), one_line=True)
        consoles()[1].print(line, style="dim", markup=False, highlight=False)
    if turn.error is not None:
        message, code = describe_error(turn.error, args.timeout, where, view.heard_model)
        if code in (EXIT_INTERRUPTED, EXIT_TIMEOUT, EXIT_TERMINATED):
            kept = "what was said is kept" if turn.error.partial.items else "nothing was said yet"
            message += f"; {kept} in session {session.name!r}"
        stderr_line(message)
        return code
    assert turn.result is not None
    if turn.result.status == "limit_reached":
        stderr_line(f"stopped after {turn.result.turns} turns (the turn limit)")
        return EXIT_FAILED
    if turn.result.status == "paused":
        stderr_line(f"paused; continue with: {PROG} run --resume --session {session.name}")
    elif not terminal and not args.json and not session.unsaved:
        stderr_line(f"session {session.name} (continue with: {PROG} run -c)")
    return EXIT_OK
