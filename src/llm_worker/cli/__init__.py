"""The ``llm-worker`` command line: ``run``, ``chat``, ``sessions``, ``show``, ``delete``.

How it is put together (each module states its own invariants):

* `_app` — the parser and `main`: every error becomes one ``llm-worker: …`` line and a status.
* `_common` — exit statuses, `CLIError`, stderr lines, consoles: what every command shares.
* `_config` — flags, environment and a session's stored settings → store, session, model, tools.
* `_runtime` — the event-loop thread, Ctrl-C and SIGTERM, and running one turn.
* `_views` — one turn's events as JSON lines, plain text or a styled terminal.
* `_safe` — the one sanitiser: what came from a model, a tool, a server or a stored session
  is printed with control characters, bidi overrides and keys made harmless.
* `_run`, `_chat`, `_sessions` — the commands.

The main thread parses flags, reads input and handles signals; the event loop runs in a helper
thread. Each turn has its own cancel token, cancelled by Ctrl-C; every committed item is on disk
before the worker goes on, so whatever stops a turn, what was said is kept.

Exit status: 0 done; 1 the run failed, or a runtime problem; 2 bad usage or configuration;
124 ``--timeout`` passed; 130 interrupted by Ctrl-C; 141 the output pipe was closed; 143 SIGTERM.
"""

from ._app import build_parser, main

__all__ = ["build_parser", "main"]
