"""``llm-worker chat``: a read-answer loop over one session, one worker for the whole chat.

Invariants:
* The main thread reads lines with ``input()`` (readline editing when stdin is a terminal) and
  hands each turn to the event-loop thread (`_runtime.run_turn`), blocking until it has ended.
* Ctrl-C at the prompt (no turn running: a `KeyboardInterrupt` out of ``input()``) or Ctrl-D
  leaves with status 0. Ctrl-C during an answer stops that turn only: what was said is kept and
  the prompt comes back; a second one while it is stopping leaves once it has stopped. A Ctrl-C
  between the two (while a turn's end is being printed) leaves through ``main`` (status 130).
* The worker is made at the first turn, after calls a previous run left pending are answered
  (unless that turn is ``/resume``, which runs them); it lives until the chat ends, so the
  history in memory and in the session stay one and the same.
* A new session is created at the first message: a chat left without one leaves nothing. A
  chat with no input at all (stdin closed) is a usage error before anything is opened.
* Once the chat has decided to end (Ctrl-D, /quit, Ctrl-C at the prompt) it ends with status 0
  and its last line however many more Ctrl-Cs come (`_runtime.leaving`; a third quits at once).
* The session is flushed and the model closed however the chat ends. A write that fails
  does not stop an answer (the store keeps the items and retries them at the next commit); the
  chat says so after the turn, and a failure that outlasts the chat is `main`'s error line.
* Every line the chat prints is made safe (`_safe.visible`): the chat's own lines go through
  `_Say`, the answers through the views. Input lines are made valid text (U+FFFD for bytes
  that are not UTF-8) where they enter.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING, Any

from .._frontend import session_worker
from . import _config
from ._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    PROG,
    CLIError,
    consoles,
    describe_error,
    isatty,
)
from ._input import read_message
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
from ._sessions import print_transcript
from ._views import PlainView, View, status_line, terminal_view

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal
    from rich.console import Console

    from ..store import Session
    from ..tools import Tool, ToolSource
    from ..worker import Worker
    from ._runtime import Turn

CHAT_HELP = """\
/help      this help
/multiline toggle multi-line input: lines are one message up to a line holding only "."
           (a pasted block is always one message)
/resume    continue the last answer if it was interrupted (or run paused tool calls)
/history   print the conversation so far
/quit      leave (also Ctrl-D, or Ctrl-C at the prompt)
Ctrl-C while the model answers stops it; what it said so far is kept."""


def cmd_chat(args: argparse.Namespace) -> int:
    if sys.stdin is None or sys.stdin.closed:
        raise CLIError("chat needs input, but stdin is closed", EXIT_USAGE)
    with _config.prepared(args, "chat") as ready:
        session = ready.open() if ready.exists else None
        try:
            return _chat(args, ready, session)
        finally:
            if session is not None:
                session.close()


def _chat(args: argparse.Namespace, ready: _config.Prepared, session: Session | None) -> int:
    from ..store import StoreError

    stdout, _ = consoles()
    with contextlib.suppress(AttributeError, ValueError):  # not UTF-8: U+FFFD, not an error
        sys.stdin.reconfigure(errors="replace")  # type: ignore[union-attr]
    interactive = isatty(sys.stdin)
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - importing it gives input() line editing and history
    say = _Say(stdout, stdout.is_terminal and not args.plain)
    say.banner(session, ready.name, ready.spec, ready.tools)
    chat = _Chat(args, ready, session, say, interactive)
    interrupts = Interrupts()
    interrupts.install()
    try:
        with event_loop() as portal:
            try:
                return chat.loop(portal, interrupts)
            finally:
                with leaving():
                    portal.call(close_model, ready.model)
                    portal.call(close_tool_sources, ready.tools)
    finally:
        with leaving():
            interrupts.uninstall()
            if chat.session is not None:
                with contextlib.suppress(StoreError):  # still failing: closing reports it
                    chat.session.flush()
                say.goodbye(chat.session)


class _Chat:
    """One chat: its session (made at the first message if new), its worker, its input mode."""

    def __init__(
        self,
        args: argparse.Namespace,
        ready: _config.Prepared,
        session: Session | None,
        say: _Say,
        interactive: bool,
    ) -> None:
        self.args, self.ready, self.session, self.say = args, ready, session, say
        self.interactive = interactive
        self.worker: Worker | None = None
        self.multiline = False

    def loop(self, portal: BlockingPortal, interrupts: Interrupts) -> int:
        say = self.say
        prompt_text = say.prompt_text()
        while True:
            try:
                line = read_message(
                    prompt_text, multiline=self.multiline, interactive=self.interactive
                )
            except (EOFError, KeyboardInterrupt):
                with leaving():
                    say.newline_if_terminal()
                return EXIT_OK
            line = valid_text(line)
            text = line.strip()
            if not text:
                continue
            prompt: str | None = line
            if text.startswith("/") and "\n" not in text:
                command = text.split()[0].lower()
                if command in ("/quit", "/exit", "/q"):
                    return EXIT_OK
                if command == "/help":
                    say.plain(CHAT_HELP)
                    continue
                if command == "/multiline":
                    self.multiline = not self.multiline
                    say.note(
                        "multi-line input: end a message with a line holding only '.'"
                        if self.multiline
                        else "one line per message again"
                    )
                    continue
                if command == "/history":
                    history = self.session.history if self.session is not None else []
                    print_transcript(say.console if say.terminal else None, history)
                    continue
                if command == "/resume":
                    if self.session is None or not self.session.resumable:
                        say.note("nothing to resume: the last answer is complete")
                        continue
                    prompt = None
                else:
                    say.note(f"unknown command {command}; /help lists the commands")
                    continue
            self._turn(portal, interrupts, prompt)
            if interrupts.quit_after_turn:
                return EXIT_OK

    def _turn(self, portal: BlockingPortal, interrupts: Interrupts, prompt: str | None) -> None:
        ready, say = self.ready, self.say
        if self.session is None:
            self.session = ready.open()
        session = self.session
        if self.worker is None:
            if prompt is not None:
                session.settle_pending()
            self.worker = session_worker(session, ready.model, ready.tools, settings=ready.settings)
        view: View = (
            terminal_view(say.console, plain=self.args.plain)
            if say.console.is_terminal
            else PlainView(sys.stdout)
        )
        try:
            turn = run_turn(portal, interrupts, self.worker, prompt, self.args.timeout, view)
        finally:
            view.finish()
        say.turn_ended(turn, ready.spec, session, self.args.timeout, endpoint(ready.model), view)


class _Say:
    """The chat's own lines (banner, notes, status), styled on a terminal, plain otherwise."""

    def __init__(self, console: Console, terminal: bool) -> None:
        self.console = console
        self.terminal = terminal

    def prompt_text(self) -> str:
        if not isatty(sys.stdin):
            return ""
        if self.terminal and not self.console.no_color:
            return "\x01\x1b[1;36m\x02›\x01\x1b[0m\x02 "  # \x01…\x02: zero width for readline
        return "> "

    def plain(self, text: str) -> None:
        self.console.print(visible(text), markup=False, highlight=False)

    def note(self, text: str, style: str = "dim") -> None:
        """One of the chat's lines; it may quote a server or a session, so it is made safe."""
        from rich.text import Text

        line = Text(visible(text, one_line=True), style=style if self.terminal else "")
        self.console.print(line, highlight=False)

    def newline_if_terminal(self) -> None:
        if isatty(sys.stdin):
            self.console.file.write("\n")

    def banner(
        self,
        session: Session | None,
        name: str | None,
        spec: str,
        tools: list[Tool[..., Any] | ToolSource],
    ) -> None:
        from rich.text import Text

        names = ", ".join(tool.name for tool in tools) or "none (--tools demo adds some)"
        where = f" · session {name}" if name else " · a new session"
        details = visible(f" · model {spec}{where} · tools: {names}", one_line=True)
        title = Text.assemble(("llm-worker chat", "bold"), (details, "dim"))
        self.console.print(title if self.terminal else title.plain, highlight=False)
        if session is None:
            pass
        elif session.history:
            count = len(session.history)
            self.note(f"continuing session {session.name!r}: {count} items (/history shows them)")
        if session is not None and session.recovery is not None:
            self.note(f"{session.recovery.describe()}; /resume continues it", "yellow")
        if isatty(sys.stdin):
            self.note(
                "Ctrl-C stops an answer and keeps it · Ctrl-C at the prompt or Ctrl-D quits · /help"
            )
            if spec.startswith("offline") and tools:
                self.note('try: "what is the weather in Paris? use get_weather"')

    def turn_ended(
        self,
        turn: Turn,
        spec: str,
        session: Session,
        timeout: float | None,
        where: str | None,
        view: View,
    ) -> None:
        if turn.error is not None:
            message, code = describe_error(turn.error, timeout, where, view.heard_model)
            if code == EXIT_INTERRUPTED:
                message = "⏹ interrupted — what was said is kept"
            elif code == EXIT_TIMEOUT:
                message = f"⏱ {message} — what was said is kept"
            self.note(message, "yellow" if code != EXIT_FAILED else "red")
        elif turn.result is not None and turn.result.status == "limit_reached":
            self.note("stopped: the turn limit was reached (/resume continues)", "yellow")
        if session.unsaved:
            self.note(
                f"{session.unsaved} item(s) not saved yet ({session.error}); "
                "they are kept and written with the next answer or when the chat ends",
                "red",
            )
        if self.terminal:
            self.note(status_line(spec, turn, session))

    def goodbye(self, session: Session) -> None:
        if isatty(sys.stdin) and not session.unsaved:
            self.note(f"saved · continue with: {PROG} chat --session {session.name}")
