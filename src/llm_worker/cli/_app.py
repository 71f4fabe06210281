"""The parser and `main`: flags to a command, and any error to one stderr line and a status.

Invariants:
* `main` never lets a traceback out (``LLM_WORKER_DEBUG=1`` shows one for unexpected errors):
  `CLIError` and the library's errors (`LLMWorkerError`) become one ``llm-worker: error: …``
  line; a Ctrl-C outside a turn (start-up, reading stdin) is "interrupted" and 130; a closed
  stdout is 141. Every such line is made safe to print (`_safe`): an error quoting a server or
  a model cannot drive the terminal, and no key from the environment is shown.
* Importing this module imports only the standard library and the CLI's own modules; each
  command imports what it needs (rich, the store, the providers) when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ._common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    MODEL_HELP,
    PROG,
    CLIError,
    error_line,
    log_to_stderr,
    silence_stdout,
)
from ._safe import valid_text, visible
from ._trace import add_trace_command, add_trace_options, trace_export

ENV_HELP = """\
environment:
  LLM_WORKER_DB          database file (default: sessions.db in the user data directory)
  LLM_WORKER_MODEL       default model spec (default: offline)
  LLM_WORKER_OFFLINE_PACE  seconds between the offline model's words (default: 0.03)
  OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL,
  GEMINI_API_KEY (or GOOGLE_API_KEY), GOOGLE_GEMINI_BASE_URL
                         provider keys and endpoints (keys are never stored)

exit status: 0 done, 1 failed, 2 bad usage, 124 timed out, 130 Ctrl-C,
             141 output pipe closed, 143 SIGTERM
"""


_TEXT_ARGUMENTS = ("prompt", "system", "session", "name")  # text, not paths or URLs
BACKENDS = ("asyncio", "trio")  # the serve command's event loops (`_serve` checks the same)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a pointer to --help), not a usage dump."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # '--mod' is not '--model': no guessing
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = visible(" ".join(message.split()), one_line=True)  # it may quote the input
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _base_url(text: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"expected an http(s) URL such as http://localhost:8080/v1, got {text!r}"
        )
    return text.strip()


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
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    db = _Parser(add_help=False)
    db.add_argument(
        "--db",
        metavar="PATH",
        help="the session database (default: $LLM_WORKER_DB or the user data directory)",
    )
    agent = _Parser(add_help=False)
    agent.add_argument("-m", "--model", metavar="SPEC", help=f"the model: {MODEL_HELP}")
    agent.add_argument(
        "--base-url",
        type=_base_url,
        metavar="URL",
        help="the provider's endpoint (overrides OPENAI_BASE_URL / ANTHROPIC_BASE_URL; kept in "
        "the session like the model, the key never is; no key needed when nothing is set)",
    )
    agent.add_argument(
        "-s", "--system", metavar="TEXT", help="the system prompt (kept in the session)"
    )
    agent.add_argument(
        "-o",
        "--option",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="a model option, e.g. -o temperature 0.2, -o max_tokens 500, "
        "-o reasoning_effort low (kept in the session; VALUE 'none' removes it); repeatable",
    )
    agent.add_argument(
        "-T",
        "--tools",
        action="append",
        metavar="TOOLS",
        help="tools the model may call: 'demo' (get_weather, slow_count, current_time), "
        "'module:attribute' (a tool, a function or a list of them) or 'path/to/file.py' (its "
        "tools); repeatable; kept in the session ('none' clears them)",
    )
    agent.add_argument(
        "--mcp",
        action="append",
        metavar="'COMMAND ARGS...'",
        help="an MCP server to start (stdio), as one quoted command line; repeatable "
        "(kept in the session with --mcp-url; 'none' clears them)",
    )
    agent.add_argument(
        "--mcp-url",
        action="append",
        metavar="URL",
        help="a streamable-HTTP MCP server, e.g. http://127.0.0.1:8000/mcp; repeatable",
    )
    agent.add_argument(
        "--session",
        metavar="NAME",
        help="the session to use or create (default: a new one named after the current time)",
    )
    agent.add_argument(
        "-c",
        "--continue",
        dest="continue_",
        action="store_true",
        help="continue the most recent session",
    )
    agent.add_argument(
        "--plain", action="store_true", help="no Markdown rendering, colours or status line"
    )
    add_trace_options(agent)

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
        "-a",
        "--attach",
        action="append",
        default=[],
        metavar="PATH_OR_URL",
        help="send an image or a document with the prompt (repeatable)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the session's interrupted or paused run instead of a prompt",
    )
    run.set_defaults(handler="_run:cmd_run")

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
    chat.set_defaults(handler="_chat:cmd_chat")

    sessions = commands.add_parser(
        "sessions",
        parents=[db],
        help="list sessions",
        description="List sessions: name, model, items, last activity, status.",
    )
    sessions.add_argument("--json", action="store_true", help="one JSON object per session")
    sessions.set_defaults(handler="_sessions:cmd_sessions")

    show = commands.add_parser(
        "show",
        parents=[db],
        help="print one session",
        description="Print one session's conversation.",
    )
    show.add_argument("name", help="the session name")
    show_format = show.add_mutually_exclusive_group()
    show_format.add_argument(
        "--json", action="store_true", help="print the items as JSON lines (lossless)"
    )
    show_format.add_argument(
        "--markdown", action="store_true", help="print the conversation as Markdown (export)"
    )
    show.set_defaults(handler="_sessions:cmd_show")

    delete = commands.add_parser(
        "delete",
        parents=[db],
        help="delete a session",
        description="Delete a session and its history.",
    )
    delete.add_argument("name", help="the session name")
    delete.set_defaults(handler="_sessions:cmd_delete")
    models = commands.add_parser(
        "models",
        help="list the model specs accepted, and which keys are set",
        description="List the model specs accepted, the options -o takes, and which "
        "provider keys are set in the environment (never their values).",
    )
    models.set_defaults(handler="_models:cmd_models")
    _add_serve(commands, agent, db)
    add_trace_command(commands)
    return parser


def _add_serve(commands: argparse._SubParsersAction[_Parser], agent: _Parser, db: _Parser) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[db],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=ENV_HELP,
        help="serve a chat page with a Stop button, and its API (AI SDK UI message stream)",
        description="Serve a chat page and a JSON/SSE API on one port. Every chat is a "
        "session (continue it with 'chat --session ID'). Ctrl-C stops the server; runs "
        "keep what they said.",
    )
    for action in agent._actions:  # the agent flags, but a chat names its own session
        if action.dest not in ("help", "session", "continue_", "plain", "option"):
            serve._add_action(action)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    serve.add_argument(
        "--token",
        metavar="TOKEN",
        help="require this token on every API call (default: none on loopback, a random one "
        "printed when binding beyond it)",
    )
    serve.add_argument(
        "--allow-origin",
        action="append",
        metavar="URL",
        help="let pages of this origin call the API (CORS), e.g. a useChat front-end at "
        "http://localhost:5173; repeatable",
    )
    serve.add_argument("--backend", choices=BACKENDS, default="asyncio", help="event loop")
    serve.add_argument("--open", action="store_true", help="open the page in a browser")
    serve.set_defaults(handler="_serve:cmd_serve")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for text_argument in _TEXT_ARGUMENTS:  # undecodable bytes: U+FFFD, not a crash later
        value = getattr(args, text_argument, None)
        if isinstance(value, str):
            setattr(args, text_argument, valid_text(value))
    target: str | None = getattr(args, "handler", None)
    if target is None:
        parser.print_help()
        return EXIT_OK
    missing = _missing_cli_dependencies()
    if missing:
        error_line(
            f"the command line needs {' and '.join(missing)}: pip install 'llm-worker[cli]' "
            "(or 'llm-worker[all]' for every provider too)"
        )
        return EXIT_USAGE
    from .._error_base import LLMWorkerError  # not `errors`: that loads the items, pydantic

    for stream in (sys.stdout, sys.stderr):  # a character the terminal cannot show: '?'
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]
    try:
        with log_to_stderr(), trace_export(args):
            return _handler(target)(args)
    except CLIError as exc:
        error_line(exc.message)
        return exc.code
    except LLMWorkerError as exc:  # the library's own errors (store, MCP, ...) say what is wrong
        error_line(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:  # Ctrl-C outside a turn (e.g. while starting): nothing to keep
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if os.environ.get("LLM_WORKER_DEBUG"):
            raise
        error_line(_unexpected(exc))
        return EXIT_FAILED


def _handler(target: str) -> Callable[[argparse.Namespace], int]:
    """The command's function, imported only now: ``--help`` loads no command."""
    import importlib

    module, _, function = target.partition(":")
    handler: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(f".{module}", __package__), function
    )
    return handler


def _unexpected(exc: BaseException) -> str:
    """An unexpected error, unwrapped from exception groups and said with its cause."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, UnicodeError):
        return f"text that cannot be encoded or decoded: {exc}"
    return f"unexpected {type(exc).__name__}: {exc} (LLM_WORKER_DEBUG=1 shows a traceback)"


def _missing_cli_dependencies() -> list[str]:
    """The `cli` extra's packages that cannot be imported (the core library needs neither)."""
    import importlib.util

    missing = []
    for name in ("rich", "platformdirs"):
        if importlib.util.find_spec(name) is None:  # found, not imported: start-up stays fast
            missing.append(name)
    return missing
