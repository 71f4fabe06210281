"""The ``llm-worker`` command line: ``run``, ``chat``, ``sessions``, ``show``, ``delete``.

How it is put together:

* The event loop (asyncio, or trio with ``LLM_WORKER_ASYNC_BACKEND=trio``) runs in a helper
  thread behind an anyio blocking portal; the main thread parses flags, reads chat input with
  ``input()`` (line editing and history through readline) and handles signals.
* Every turn gets its own `CancelToken`, created in the main thread *before* the turn is handed
  to the loop. The SIGINT handler cancels that token (kind ``keyboard_interrupt``; SIGTERM:
  ``explicit``), which is thread-safe and never blocks, so a Ctrl-C is never lost and never hits a
  later turn. With no turn running, SIGINT raises `KeyboardInterrupt` in the main thread: at the
  chat prompt that quits. A second Ctrl-C while a turn is still stopping asks to quit once it has
  stopped; a third exits at once (what was committed is already on disk).
* Every item the worker commits is written to the session database before the worker goes on
  (`llm_worker.store`), so what was said before a Ctrl-C, a timeout or a crash is kept.
* User mistakes (a bad flag, an unknown model spec, a missing key, an unreachable server, a
  database that is not ours, a session in use) end with one ``llm-worker: error: …`` line on
  stderr and a non-zero exit status; never a traceback (``LLM_WORKER_DEBUG=1`` shows one for
  unexpected errors).

Exit status: 0 done; 1 the run failed, or a runtime problem; 2 bad usage or configuration;
124 ``--timeout`` passed; 130 interrupted by Ctrl-C; 141 the output pipe was closed; 143 SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal
    from rich.console import Console

    from .cancel import CancelToken
    from .errors import RunError
    from .events import Event
    from .items import Item, Usage
    from .models import Model
    from .result import RunResult
    from .store import Session, SessionInfo, SQLiteStore
    from .worker import Worker

__all__ = ["build_parser", "main"]

PROG = "llm-worker"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
EXIT_TERMINATED = 143

ENV_HELP = """\
environment:
  LLM_WORKER_DB          database file (default: sessions.db in the user data directory)
  LLM_WORKER_MODEL       default model spec (default: offline)
  LLM_WORKER_OFFLINE_PACE  seconds between the offline model's words (default: 0.03)
  OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL
                         provider keys and endpoints (keys are never stored)

exit status: 0 done, 1 failed, 2 bad usage, 124 timed out, 130 Ctrl-C, 143 SIGTERM
"""

MODEL_HELP = (
    "offline (built in, no key), offline:reasoning, openai:MODEL, openai-responses:MODEL, "
    "anthropic:MODEL, ollama:MODEL"
)


class CLIError(Exception):
    """A problem to report as one line on stderr, with an exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# -- arguments ------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a pointer to --help), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``llm-worker`` (exposed for documentation and tests)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description="An LLM agent you can stop at any moment without losing anything.",
        epilog=ENV_HELP,
        formatter_class=formatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    db = _Parser(add_help=False)
    db.add_argument(
        "--db",
        metavar="PATH",
        help="the session database (default: $LLM_WORKER_DB or the user data directory)",
    )
    agent = _Parser(add_help=False)
    agent.add_argument("--model", metavar="SPEC", help=f"the model: {MODEL_HELP}")
    agent.add_argument(
        "--base-url",
        metavar="URL",
        help="the provider's endpoint (overrides OPENAI_BASE_URL / ANTHROPIC_BASE_URL)",
    )
    agent.add_argument("--system", metavar="TEXT", help="the system prompt (kept in the session)")
    agent.add_argument(
        "--tools",
        choices=("demo", "none"),
        default="none",
        help="tools the model may call: 'demo' adds get_weather, slow_count and current_time",
    )
    agent.add_argument(
        "--session",
        metavar="NAME",
        help="the session to use or create (default: a new one named after the current time)",
    )

    run = commands.add_parser(
        "run",
        parents=[agent, db],
        formatter_class=formatter,
        epilog=ENV_HELP,
        help="answer one prompt, streaming the answer to stdout",
        description="Answer one prompt, streaming the answer to stdout. Ctrl-C stops it and "
        "keeps what was said (exit status 130).",
    )
    run.add_argument("prompt", nargs="?", help="the prompt ('-' or nothing: read stdin)")
    run.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="stop after S seconds, keeping what was said (exit status 124)",
    )
    run.add_argument("--json", action="store_true", help="print events as JSON lines")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the session's interrupted or paused run instead of a prompt",
    )
    run.set_defaults(handler=_cmd_run)

    chat = commands.add_parser(
        "chat",
        parents=[agent, db],
        formatter_class=formatter,
        epilog=ENV_HELP,
        help="talk with the model interactively",
        description="Talk with the model. Ctrl-C stops an answer and keeps what was said; "
        "Ctrl-C at the prompt, Ctrl-D or /quit leaves. /help lists commands.",
    )
    chat.add_argument(
        "--timeout", type=_positive_float, metavar="S", help="stop each answer after S seconds"
    )
    chat.set_defaults(handler=_cmd_chat)

    sessions = commands.add_parser(
        "sessions",
        parents=[db],
        help="list sessions",
        description="List sessions: name, model, items, last activity, status.",
    )
    sessions.add_argument("--json", action="store_true", help="one JSON object per session")
    sessions.set_defaults(handler=_cmd_sessions)

    show = commands.add_parser(
        "show",
        parents=[db],
        help="print one session",
        description="Print one session's conversation.",
    )
    show.add_argument("name", help="the session name")
    show.add_argument("--json", action="store_true", help="print the items as JSON lines")
    show.set_defaults(handler=_cmd_show)

    delete = commands.add_parser(
        "delete",
        parents=[db],
        help="delete a session",
        description="Delete a session and its history.",
    )
    delete.add_argument("name", help="the session name")
    delete.set_defaults(handler=_cmd_delete)
    return parser


# -- entry point ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_OK
    from .store import StoreError

    try:
        return handler(args)
    except CLIError as exc:
        _error(exc.message)
        return exc.code
    except StoreError as exc:
        _error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:  # Ctrl-C outside a turn (e.g. while starting): nothing to keep
        _stderr_line("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if os.environ.get("LLM_WORKER_DEBUG"):
            raise
        _error(f"unexpected {type(exc).__name__}: {exc} (LLM_WORKER_DEBUG=1 shows a traceback)")
        return EXIT_FAILED


def _error(message: str) -> None:
    _stderr_line(f"error: {message}")


def _stderr_line(message: str) -> None:
    """One ``llm-worker: …`` line on stderr (collapsed to one line whatever the message)."""
    text = " ".join(message.split())
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{PROG}: {text}\n")
        sys.stderr.flush()


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush is quiet."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# -- configuration --------------------------------------------------------------------------------


def _db_path(args: argparse.Namespace) -> tuple[str, bool]:
    """The database path, and whether it is the default one (whose directory we may create)."""
    if args.db:
        return os.path.expanduser(args.db), False
    from .store import default_db_path

    return default_db_path(), "LLM_WORKER_DB" not in os.environ


def _open_store(args: argparse.Namespace, *, create: bool = True) -> SQLiteStore | None:
    """The store, or None when ``create`` is False and there is no database yet."""
    from .store import SQLiteStore

    path, default = _db_path(args)
    if not os.path.exists(path):
        if not create:
            return None
        if default:
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return SQLiteStore(path)


def _model_spec(args: argparse.Namespace, stored: str | None) -> str:
    spec: str = args.model or stored or os.environ.get("LLM_WORKER_MODEL") or "offline"
    return spec.strip()


def _build_model(spec: str, base_url: str | None) -> Model:
    """The model a spec names; bad specs and missing keys become a usage `CLIError`."""
    provider, _, variant = spec.partition(":")
    if provider == "offline":
        if variant not in ("", "reasoning"):
            raise CLIError(f"unknown model spec {spec!r}; expected one of: {MODEL_HELP}", 2)
        from .models.offline import OfflineModel

        return OfflineModel(pace=_offline_pace(), reasoning=variant == "reasoning")
    from .models import UnknownModelSpec, resolve_model
    from .models._http import MissingCredentials  # imports the HTTP stack: only for providers

    try:
        return resolve_model(spec, base_url=base_url)
    except UnknownModelSpec:
        raise CLIError(f"unknown model spec {spec!r}; expected one of: {MODEL_HELP}", 2) from None
    except MissingCredentials:
        variable = "ANTHROPIC_API_KEY" if provider == "anthropic" else "OPENAI_API_KEY"
        raise CLIError(
            f"{spec} needs an API key: set {variable} (keys are read from the environment and "
            "never stored)",
            EXIT_USAGE,
        ) from None
    except ImportError as exc:
        raise CLIError(f"the provider of {spec!r} cannot be loaded: {exc}", EXIT_USAGE) from None
    except ValueError as exc:  # e.g. a malformed base URL
        raise CLIError(f"cannot use model {spec!r}: {exc}", EXIT_USAGE) from None


def _offline_pace() -> float:
    text = os.environ.get("LLM_WORKER_OFFLINE_PACE")
    if not text:
        return 0.03
    try:
        pace = float(text)
    except ValueError:
        pace = -1.0
    if not 0 <= pace < float("inf"):
        raise CLIError(f"LLM_WORKER_OFFLINE_PACE must be a number of seconds, got {text!r}", 2)
    return pace


def _tools(args: argparse.Namespace) -> list[Any]:
    if args.tools == "demo":
        from ._demo_tools import DEMO_TOOLS

        return list(DEMO_TOOLS)
    return []


def _open_session(
    store: SQLiteStore, args: argparse.Namespace, kind: str
) -> tuple[Session, Model, str]:
    """Open the named session (or a fresh one) with the model its flags and history call for."""
    from .store import SessionNotFound

    stored: str | None = None
    if args.session:
        with contextlib.suppress(SessionNotFound):
            stored = store.session_info(args.session).model
    spec = _model_spec(args, stored)
    model = _build_model(spec, args.base_url)  # before the session: a bad spec changes nothing
    if args.session:
        session = store.open_session(args.session, model=spec, system=args.system)
    else:
        session = _fresh_session(store, kind, spec, args.system)
    return session, model, spec


def _fresh_session(store: SQLiteStore, kind: str, spec: str, system: str | None) -> Session:
    from .store import SessionLocked, SessionNotFound

    base = datetime.now().strftime(f"{kind}-%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        name = base if attempt == 1 else f"{base}-{attempt}"
        try:
            store.session_info(name)
            continue  # taken
        except SessionNotFound:
            pass
        try:
            session = store.open_session(name, model=spec, system=system)
        except SessionLocked:
            continue
        if session.history:  # another process created it in between: leave it alone
            session.close()
            continue
        return session
    raise CLIError("could not find a free session name")


# -- signals and the event loop -------------------------------------------------------------------


@dataclass
class _Interrupts:
    """Signal state, touched only in the main thread (where Python runs signal handlers)."""

    token: CancelToken | None = None
    count: int = 0
    quit_after_turn: bool = False
    previous: dict[int, Any] = field(default_factory=dict)
    restore_terminal: Callable[[], None] = lambda: None  # before quitting at once

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    @contextlib.contextmanager
    def turn(self, token: CancelToken) -> Iterator[None]:
        """Route signals to ``token`` for the duration of one turn."""
        self.token, self.count = token, 0
        try:
            yield
        finally:
            self.token = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        token = self.token
        if token is None:  # idle (the chat prompt, start-up): leave
            if signum == signal.SIGTERM:
                raise SystemExit(EXIT_TERMINATED)
            raise KeyboardInterrupt
        self.count += 1
        if self.count == 1:
            if signum == signal.SIGTERM:
                token.cancel("terminated (SIGTERM)", kind="explicit")
            else:
                token.cancel("interrupted by Ctrl-C", kind="keyboard_interrupt")
        elif self.count == 2:
            self.quit_after_turn = True
            _raw_stderr(f"\n{PROG}: still stopping… press Ctrl-C again to quit at once\n")
        else:  # what was committed is on disk already; the block in flight is given up
            self.restore_terminal()
            _raw_stderr(f"\n{PROG}: quit at once\n")
            os._exit(EXIT_INTERRUPTED)


def _raw_stderr(text: str) -> None:
    """Write from a signal handler: no Python-level locks, so it cannot deadlock."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


@contextlib.contextmanager
def _event_loop() -> Iterator[BlockingPortal]:
    from anyio.from_thread import start_blocking_portal

    backend = os.environ.get("LLM_WORKER_ASYNC_BACKEND", "asyncio")
    if backend not in ("asyncio", "trio"):
        raise CLIError(f"LLM_WORKER_ASYNC_BACKEND must be asyncio or trio, got {backend!r}", 2)
    try:
        portal_cm = start_blocking_portal(backend)
    except ModuleNotFoundError as exc:
        raise CLIError(f"the {backend} event loop is not installed ({exc})", EXIT_USAGE) from None
    with portal_cm as portal:
        yield portal


# -- one turn -------------------------------------------------------------------------------------


@dataclass
class _Turn:
    """What one turn ended with: a result or an error, and how long it took."""

    result: RunResult | None
    error: RunError | None
    seconds: float

    @property
    def usage(self) -> Usage:
        from .items import Usage

        source = self.result if self.result is not None else (self.error and self.error.partial)
        return source.usage if source else Usage()


async def _drive_turn(
    worker: Worker, prompt: str | None, token: CancelToken, timeout: float | None, view: _View
) -> _Turn:
    """Stream one run (``prompt=None`` resumes) into ``view``; runs in the event-loop thread."""
    from .errors import RunError

    started = time.monotonic()
    async with worker.stream(prompt, token=token, timeout=timeout) as run:
        async for event in run:
            view.event(event)
    seconds = time.monotonic() - started
    try:
        return _Turn(run.result, None, seconds)
    except RunError as exc:
        return _Turn(None, exc, seconds)


def _run_turn(
    portal: BlockingPortal,
    interrupts: _Interrupts,
    worker: Worker,
    prompt: str | None,
    timeout: float | None,
    view: _View,
) -> _Turn:
    from .cancel import CancelToken

    token = CancelToken("cli-turn")
    view.on_broken_pipe = lambda: token.cancel("the output was closed", kind="explicit")
    with interrupts.turn(token), _no_control_echo(interrupts):
        return portal.call(_drive_turn, worker, prompt, token, timeout, view)


@contextlib.contextmanager
def _no_control_echo(interrupts: _Interrupts) -> Iterator[None]:
    """While a turn streams, keep the terminal from echoing ``^C`` into the answer's text."""
    try:
        import termios
    except ImportError:  # not a POSIX system
        yield
        return
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        changed = list(saved)
        changed[3] &= ~termios.ECHOCTL
        termios.tcsetattr(fd, termios.TCSANOW, changed)
    except (termios.error, OSError, ValueError, AttributeError):  # stdin is not a terminal
        yield
        return

    def restore() -> None:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSANOW, saved)

    interrupts.restore_terminal = restore
    try:
        yield
    finally:
        interrupts.restore_terminal = lambda: None
        restore()


async def _close_model(model: Model) -> None:
    close = getattr(model, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


# -- output ---------------------------------------------------------------------------------------


class _View:
    """Turns run events into output. Called in the event-loop thread, one event at a time."""

    def __init__(self) -> None:
        self.on_broken_pipe: Callable[[], object] = lambda: None
        self.broken = False

    def event(self, event: Event) -> None:
        try:
            self._event(event)
        except BrokenPipeError:
            self._broke()

    def _broke(self) -> None:
        if not self.broken:
            self.broken = True
            _silence_stdout()
            self.on_broken_pipe()

    def _event(self, event: Event) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """The turn is over: end the last line."""


class _JsonView(_View):
    """``--json``: every event as one JSON line, flushed at once (items are already on disk)."""

    def __init__(self, out: IO[str]) -> None:
        super().__init__()
        self.out = out

    def _event(self, event: Event) -> None:
        self.out.write(event.model_dump_json() + "\n")
        self.out.flush()


class _PlainView(_View):
    """Piped output: the answer's text only, as it arrives; turns separated by a line break."""

    def __init__(self, out: IO[str]) -> None:
        super().__init__()
        self.out = out
        self.at_line_start = True
        self.wrote = False

    def _event(self, event: Event) -> None:
        from .events import TextDelta, TurnStarted

        if isinstance(event, TurnStarted) and not self.at_line_start:
            self._write("\n")
        elif isinstance(event, TextDelta) and event.text:
            self._write(event.text)

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
        self.at_line_start = text.endswith("\n")
        self.wrote = True

    def finish(self) -> None:
        if not self.at_line_start:
            try:
                self._write("\n")
            except BrokenPipeError:
                self._broke()


_ICONS = {
    "ok": ("✓", "green"),
    "error": ("✗", "red"),
    "interrupted": ("⏹", "yellow"),
    "cancelled": ("⏹", "yellow"),
    "abandoned": ("⚠", "red"),
    "skipped": ("↷", "yellow"),
}


class _TerminalView(_View):
    """A terminal: streamed text word-wrapped to the width, tool calls as they run, a spinner
    while waiting for the model, reasoning dimmed. Model text is never read as rich markup."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.column = 0
        self.reasoning = False
        self._spinner: Any = None

    # the spinner: shown while the model has said nothing yet
    def _spin(self) -> None:
        from rich.live import Live
        from rich.spinner import Spinner

        self._stop_spinning()
        if self.column:
            self._newline()
        spinner = Spinner("dots", text="thinking…", style="dim")
        self._spinner = Live(
            spinner,
            console=self.console,
            transient=True,
            refresh_per_second=12,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._spinner.start()

    def _stop_spinning(self) -> None:
        spinner, self._spinner = self._spinner, None
        if spinner is not None:
            spinner.stop()

    def _event(self, event: Event) -> None:
        from .events import (
            ReasoningDelta,
            ReasoningEnd,
            ReasoningStart,
            Retrying,
            RunCancelled,
            RunFailed,
            RunFinished,
            TextDelta,
            ToolFinished,
            ToolStarted,
            TurnStarted,
        )

        if isinstance(event, TurnStarted):
            self._spin()
        elif isinstance(event, TextDelta):
            self._stop_spinning()
            if self.reasoning:
                self._end_reasoning()
            self._text(event.text)
        elif isinstance(event, ReasoningStart):
            self._stop_spinning()
            self.reasoning = True
            self._styled("thinking: ", "dim italic")
        elif isinstance(event, ReasoningDelta):
            self._stop_spinning()
            self._text(event.text, style="dim italic")
        elif isinstance(event, ReasoningEnd):
            self._end_reasoning()
        elif isinstance(event, ToolStarted):
            self._stop_spinning()
            self._line(f"  ⚙ {event.name}({_format_arguments(event.arguments)})", "cyan")
        elif isinstance(event, ToolFinished):
            result = event.result
            icon, style = _ICONS.get(result.status, ("•", ""))
            status = "" if result.status == "ok" else f" [{result.status}]"
            self._line(f"  {icon} {result.name}{status} → {_first_line(result.content)}", style)
        elif isinstance(event, Retrying):
            self._stop_spinning()
            self._line(
                f"  ↻ retrying in {event.delay:.1f}s (attempt {event.attempt}): {event.error}",
                "yellow dim",
            )
            self._spin()
        elif isinstance(event, RunFinished | RunCancelled | RunFailed):
            self._stop_spinning()

    def _end_reasoning(self) -> None:
        self.reasoning = False
        self._newline()

    def _text(self, text: str, style: str | None = None) -> None:
        """Write streamed text, breaking lines at spaces before the terminal would."""
        width = max(20, self.console.width - 1)
        pieces: list[str] = []
        for word in _words(text):
            if word == "\n":
                pieces.append("\n")
                self.column = 0
            elif word.isspace():
                if self.column:
                    pieces.append(word)
                    self.column += len(word)
            else:
                if self.column and self.column + len(word) > width:
                    while pieces and pieces[-1].isspace() and pieces[-1] != "\n":
                        pieces.pop()
                    pieces.append("\n")
                    self.column = 0
                pieces.append(word)
                self.column += len(word)
        self._emit("".join(pieces), style)

    def _styled(self, text: str, style: str) -> None:
        """Write a short styled fragment (no line breaks) and count its width."""
        self._emit(text, style)
        self.column += len(text)

    def _emit(self, text: str, style: str | None) -> None:
        if style:
            from rich.text import Text

            self.console.print(Text(text, style=style), end="", soft_wrap=True, highlight=False)
        else:
            self.console.file.write(text)
            self.console.file.flush()

    def _newline(self) -> None:
        self.console.file.write("\n")
        self.console.file.flush()
        self.column = 0

    def _line(self, text: str, style: str) -> None:
        from rich.text import Text

        if self.column:
            self._newline()
        line = Text(text, style=style)
        line.truncate(max(20, self.console.width - 1), overflow="ellipsis")
        self.console.print(line, highlight=False, soft_wrap=True)
        self.column = 0

    def finish(self) -> None:
        self._stop_spinning()
        if self.column:
            self._newline()


def _words(text: str) -> list[str]:
    """``text`` as words, runs of blanks, and single line breaks, in order."""
    return _WORDS_RE.findall(text)


_WORDS_RE = re.compile(r"\n|[^\S\n]+|\S+")


def _format_arguments(arguments: dict[str, object]) -> str:
    parts = [
        f"{key}={json.dumps(value, ensure_ascii=False, default=str)}"
        for key, value in arguments.items()
    ]
    return _shorten(", ".join(parts), 80)


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else "(no output)"
    return first + (" …" if len(lines) > 1 else "")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _consoles() -> tuple[Console, Console]:
    """Rich consoles for stdout and stderr (rich is imported only when output is a terminal)."""
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False), Console(file=sys.stderr, highlight=False)


def _isatty(stream: IO[str] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # closed
        return False


def _status_line(model: str, turn: _Turn, session: Session) -> str:
    usage = turn.usage
    total = _session_tokens(session.history)
    parts = [model]
    if usage.input_tokens or usage.output_tokens:
        parts.append(f"{usage.input_tokens:,} in / {usage.output_tokens:,} out tokens")
    parts.append(f"{turn.seconds:.1f}s")
    parts.append(f"session {session.name}" + (f" ({total:,} tokens)" if total else ""))
    return " · ".join(parts)


def _session_tokens(history: Sequence[Item]) -> int:
    from .items import AssistantMessage

    return sum(
        item.usage.input_tokens + item.usage.output_tokens
        for item in history
        if isinstance(item, AssistantMessage) and item.usage is not None
    )


def _describe_error(error: RunError, timeout: float | None) -> tuple[str, int]:
    """The stderr line and exit status for a run that did not finish."""
    from .errors import Cancelled

    if isinstance(error, Cancelled):
        if error.kind == "deadline":
            return f"timed out after {timeout:g}s" if timeout else "timed out", EXIT_TIMEOUT
        if error.kind == "keyboard_interrupt":
            return "interrupted", EXIT_INTERRUPTED
        if error.reason == "terminated (SIGTERM)":
            return "terminated", EXIT_TERMINATED
        return f"stopped ({error.reason or error.kind})", EXIT_FAILED
    return f"error: {error}", EXIT_FAILED


# -- run ------------------------------------------------------------------------------------------


def _read_prompt(args: argparse.Namespace) -> str | None:
    if args.resume:
        if args.prompt is not None:
            raise CLIError("give either a prompt or --resume, not both", EXIT_USAGE)
        return None
    prompt: str | None = args.prompt
    if prompt is None or prompt == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise CLIError("no prompt: pass one as an argument or on stdin", EXIT_USAGE)
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise CLIError("the prompt is empty", EXIT_USAGE)
    return prompt


def _cmd_run(args: argparse.Namespace) -> int:
    prompt = _read_prompt(args)
    if args.resume and not args.session:
        raise CLIError("--resume needs --session NAME", EXIT_USAGE)
    if args.model:
        _build_model(_model_spec(args, None), args.base_url)  # fail before touching the database
    store = _open_store(args)
    assert store is not None
    with store:
        session, model, spec = _open_session(store, args, "run")
        with session:
            return _run_in_session(args, session, model, spec, prompt)


def _run_in_session(
    args: argparse.Namespace, session: Session, model: Model, spec: str, prompt: str | None
) -> int:
    terminal = _isatty(sys.stdout) and not args.json
    if prompt is None:
        if not session.resumable:
            raise CLIError(f"session {session.name!r} has nothing to resume")
    else:
        session.settle_pending()
    worker = session.worker(model, tools=_tools(args))
    view: _View
    if args.json:
        view = _JsonView(sys.stdout)
    elif terminal:
        stdout, stderr = _consoles()
        if session.recovery is not None:
            stderr.print(f"{PROG}: {session.recovery.describe()}", style="dim", markup=False)
        view = _TerminalView(stdout)
    else:
        view = _PlainView(sys.stdout)
    interrupts = _Interrupts()
    interrupts.install()
    try:
        with _event_loop() as portal:
            try:
                turn = _run_turn(portal, interrupts, worker, prompt, args.timeout, view)
            finally:
                view.finish()
                portal.call(_close_model, model)
    finally:
        interrupts.uninstall()
    session.flush()
    if view.broken:
        return EXIT_BROKEN_PIPE
    if terminal and turn.result is not None:
        _consoles()[1].print(_status_line(spec, turn, session), style="dim", highlight=False)
    if turn.error is not None:
        message, code = _describe_error(turn.error, args.timeout)
        if code in (EXIT_INTERRUPTED, EXIT_TIMEOUT, EXIT_TERMINATED):
            kept = "what was said is kept" if turn.error.partial.items else "nothing was said yet"
            message += f"; {kept} in session {session.name!r}"
        _stderr_line(message)
        return code
    assert turn.result is not None
    if turn.result.status == "limit_reached":
        _stderr_line(f"stopped after {turn.result.turns} turns (the turn limit)")
        return EXIT_FAILED
    if turn.result.status == "paused":
        _stderr_line(f"paused; continue with: {PROG} run --resume --session {session.name}")
    return EXIT_OK


# -- chat -----------------------------------------------------------------------------------------

CHAT_HELP = """\
/help      this help
/resume    continue the last answer if it was interrupted (or run paused tool calls)
/history   print the conversation so far
/quit      leave (also Ctrl-D, or Ctrl-C at the prompt)
Ctrl-C while the model answers stops it; what it said so far is kept."""


def _cmd_chat(args: argparse.Namespace) -> int:
    if args.model:
        _build_model(_model_spec(args, None), args.base_url)
    store = _open_store(args)
    assert store is not None
    with store:
        session, model, spec = _open_session(store, args, "chat")
        with session:
            return _chat(args, session, model, spec)


def _chat(args: argparse.Namespace, session: Session, model: Model, spec: str) -> int:
    stdout, _ = _consoles()
    interactive = sys.stdin.isatty()
    terminal = stdout.is_terminal
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - importing it gives input() line editing and history
    tools = _tools(args)
    say = _Say(stdout, terminal)
    say.banner(session, spec, tools)
    interrupts = _Interrupts()
    interrupts.install()
    try:
        with _event_loop() as portal:
            try:
                return _chat_loop(args, session, model, spec, tools, portal, interrupts, say)
            finally:
                portal.call(_close_model, model)
    finally:
        interrupts.uninstall()
        session.flush()
        say.goodbye(session)


def _chat_loop(
    args: argparse.Namespace,
    session: Session,
    model: Model,
    spec: str,
    tools: list[Any],
    portal: BlockingPortal,
    interrupts: _Interrupts,
    say: _Say,
) -> int:
    worker: Worker | None = None
    prompt_text = say.prompt_text()
    while True:
        try:
            line = input(prompt_text)
        except EOFError:
            say.newline_if_terminal()
            return EXIT_OK
        except KeyboardInterrupt:
            say.newline_if_terminal()
            return EXIT_OK
        text = line.strip()
        if not text:
            continue
        prompt: str | None = line
        if text.startswith("/"):
            command = text.split()[0].lower()
            if command in ("/quit", "/exit", "/q"):
                return EXIT_OK
            if command == "/help":
                say.plain(CHAT_HELP)
                continue
            if command == "/history":
                _print_transcript(say.console if say.terminal else None, session.history)
                continue
            if command == "/resume":
                if not session.resumable:
                    say.note("nothing to resume: the last answer is complete")
                    continue
                prompt = None
            else:
                say.note(f"unknown command {command}; /help lists the commands")
                continue
        if worker is None:
            if prompt is not None:
                session.settle_pending()
            worker = session.worker(model, tools=tools)
        view: _View = _TerminalView(say.console) if say.terminal else _PlainView(sys.stdout)
        try:
            turn = _run_turn(portal, interrupts, worker, prompt, args.timeout, view)
        finally:
            view.finish()
        say.turn_ended(turn, spec, session, args.timeout)
        if interrupts.quit_after_turn:
            return EXIT_OK


class _Say:
    """The chat's own lines (banner, notes, status), styled on a terminal, plain otherwise."""

    def __init__(self, console: Console, terminal: bool) -> None:
        self.console = console
        self.terminal = terminal

    def prompt_text(self) -> str:
        if not sys.stdin.isatty():
            return ""
        if self.terminal and not self.console.no_color:
            return "\x01\x1b[1;36m\x02›\x01\x1b[0m\x02 "  # \x01…\x02: zero width for readline
        return "> "

    def plain(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def note(self, text: str, style: str = "dim") -> None:
        from rich.text import Text

        self.console.print(Text(text, style=style if self.terminal else ""), highlight=False)

    def newline_if_terminal(self) -> None:
        if sys.stdin.isatty():
            self.console.file.write("\n")

    def banner(self, session: Session, spec: str, tools: list[Any]) -> None:
        from rich.text import Text

        names = ", ".join(tool.name for tool in tools) or "none (--tools demo adds some)"
        title = Text.assemble(
            ("llm-worker chat", "bold"),
            (f" · model {spec} · session {session.name} · tools: {names}", "dim"),
        )
        self.console.print(title if self.terminal else title.plain, highlight=False)
        if session.history:
            count = len(session.history)
            self.note(f"continuing session {session.name!r}: {count} items (/history shows them)")
        if session.recovery is not None:
            self.note(f"{session.recovery.describe()}; /resume continues it", "yellow")
        if sys.stdin.isatty():
            self.note(
                "Ctrl-C stops an answer and keeps it · Ctrl-C at the prompt or Ctrl-D quits · /help"
            )
            if spec.startswith("offline") and tools:
                self.note('try: "what is the weather in Paris? use get_weather"')

    def turn_ended(self, turn: _Turn, spec: str, session: Session, timeout: float | None) -> None:
        if turn.error is not None:
            message, code = _describe_error(turn.error, timeout)
            if code == EXIT_INTERRUPTED:
                message = "⏹ interrupted — what was said is kept"
            elif code == EXIT_TIMEOUT:
                message = f"⏱ {message} — what was said is kept"
            self.note(message, "yellow" if code != EXIT_FAILED else "red")
        elif turn.result is not None and turn.result.status == "limit_reached":
            self.note("stopped: the turn limit was reached (/resume continues)", "yellow")
        if self.terminal:
            self.note(_status_line(spec, turn, session))

    def goodbye(self, session: Session) -> None:
        if sys.stdin.isatty():
            self.note(f"saved · continue with: {PROG} chat --session {session.name}")


# -- sessions, show, delete ---------------------------------------------------------------------


def _cmd_sessions(args: argparse.Namespace) -> int:
    store = _open_store(args, create=False)
    infos: list[SessionInfo] = []
    if store is not None:
        with store:
            infos = store.sessions()
    if args.json:
        for info in infos:
            sys.stdout.write(json.dumps(_info_json(info)) + "\n")
        return EXIT_OK
    if not infos:
        where = store.path if store is not None else _db_path(args)[0]
        sys.stdout.write(f"no sessions yet (database: {where})\n")
        return EXIT_OK
    if _isatty(sys.stdout):
        from rich.table import Table

        stdout, _ = _consoles()

        table = Table(box=None, header_style="bold", pad_edge=False)
        for column, justify in (
            ("NAME", "left"),
            ("MODEL", "left"),
            ("ITEMS", "right"),
            ("LAST ACTIVITY", "left"),
            ("STATUS", "left"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for info in infos:
            table.add_row(
                info.name,
                info.model or "",
                str(info.items),
                _when(info.updated_at),
                info.status,
                style=_status_style(info.status),
            )
        stdout.print(table)
    else:
        rows = [("NAME", "MODEL", "ITEMS", "LAST ACTIVITY", "STATUS")]
        rows += [
            (i.name, i.model or "-", str(i.items), _local(i.updated_at), i.status or "-")
            for i in infos
        ]
        widths = [max(len(row[c]) for row in rows) for c in range(5)]
        for row in rows:
            sys.stdout.write(
                "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n"
            )
    return EXIT_OK


def _info_json(info: SessionInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "model": info.model,
        "items": info.items,
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
        "status": info.status,
        "last_run": None
        if info.last_run is None
        else {
            "run_id": info.last_run.run_id,
            "outcome": info.last_run.outcome,
            "kind": info.last_run.kind,
            "reason": info.last_run.reason,
        },
    }


def _status_style(status: str) -> str:
    return {
        "crashed": "red",
        "failed": "red",
        "interrupted": "yellow",
        "in use": "cyan",
        "paused": "yellow",
    }.get(status, "")


def _local(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _when(moment: datetime) -> str:
    """Local time, and how long ago: ``2025-01-02 10:31 (5 min ago)``."""
    seconds = max(0.0, time.time() - moment.timestamp())
    if seconds < 60:
        ago = "just now"
    elif seconds < 3600:
        ago = f"{int(seconds // 60)} min ago"
    elif seconds < 86400:
        ago = f"{int(seconds // 3600)} h ago"
    else:
        ago = f"{int(seconds // 86400)} d ago"
    return f"{moment.astimezone().strftime('%Y-%m-%d %H:%M')} ({ago})"


def _cmd_show(args: argparse.Namespace) -> int:
    from .items import dump_item
    from .store import SessionNotFound

    store = _open_store(args, create=False)
    if store is None:
        raise CLIError(f"no session named {args.name!r} (no database at {_db_path(args)[0]})")
    with store:
        try:
            info = store.session_info(args.name)
            history = store.load_history(args.name)
        except SessionNotFound as exc:
            raise CLIError(str(exc)) from None
    if args.json:
        for item in history:
            sys.stdout.write(dump_item(item) + "\n")
        return EXIT_OK
    title = f"session {info.name}"
    details = (
        f" · model {info.model or '-'} · {info.items} items · created {_local(info.created_at)}"
        f" · last activity {_local(info.updated_at)}" + (f" · {info.status}" if info.status else "")
    )
    if not _isatty(sys.stdout):
        sys.stdout.write(title + details + "\n")
        if info.system:
            sys.stdout.write(f"system: {info.system}\n")
        _print_transcript(None, history)
        return EXIT_OK
    from rich.text import Text

    stdout, _ = _consoles()
    stdout.print(Text.assemble((title, "bold"), (details, "dim")), highlight=False)
    if info.system:
        stdout.print(Text(f"system: {info.system}", style="dim italic"))
    _print_transcript(stdout, history)
    return EXIT_OK


def _print_transcript(console: Console | None, history: Sequence[Item]) -> None:
    """The conversation, one block per item: styled on ``console``, plain on stdout if None.

    Content is never read as rich markup.
    """
    from .items import AssistantMessage, Note, ToolCall, ToolResult, UserMessage

    def out(label: str, text: str, style: str = "", label_style: str = "bold") -> None:
        if console is None:
            sys.stdout.write(f"{label}{text}\n")
        else:
            from rich.text import Text

            console.print(Text.assemble((label, label_style), (text, style)), highlight=False)

    for item in history:
        if isinstance(item, UserMessage):
            out("you: ", item.text, label_style="bold cyan")
        elif isinstance(item, AssistantMessage):
            if item.reasoning:
                out("thinking: ", item.reasoning, "dim italic", "dim")
            suffix = " [interrupted]" if item.interrupted else ""
            if item.text or suffix:
                out("assistant: ", item.text.rstrip() + suffix, label_style="bold green")
        elif isinstance(item, ToolCall):
            args = (
                item.raw_arguments if item.arguments is None else _format_arguments(item.arguments)
            )
            incomplete = "" if item.complete else " [arguments cut off]"
            out("  tool call: ", f"{item.name}({args}){incomplete}", "cyan", "dim")
        elif isinstance(item, ToolResult):
            status = "" if item.status == "ok" else f" [{item.status}]"
            style = _ICONS.get(item.status, ("", ""))[1]
            out(
                "  tool result: ",
                f"{item.name}{status} → {_shorten(item.content, 500)}",
                style,
                "dim",
            )
        elif isinstance(item, Note):
            out("note: ", item.text, "dim italic", "dim")


def _cmd_delete(args: argparse.Namespace) -> int:
    from .store import SessionNotFound

    store = _open_store(args, create=False)
    if store is None:
        raise CLIError(f"no session named {args.name!r} (no database at {_db_path(args)[0]})")
    with store:
        try:
            store.delete_session(args.name)
        except SessionNotFound as exc:
            raise CLIError(str(exc)) from None
    sys.stdout.write(f"deleted session {args.name}\n")
    return EXIT_OK
