"""From flags, environment and the session's stored settings to a store, a session, a model and
tools (the worker on the session is `_frontend.session_worker`'s).

Invariants:
* Everything here runs in the main thread and nothing awaits, before the event loop starts, so
  a Ctrl-C there is a plain `KeyboardInterrupt` (``main`` reports it; nothing was said yet).
* A bad model spec, a missing key or a bad environment variable is a usage `CLIError` raised
  *before* the session is opened or written: a mistake changes nothing on disk.
* A session remembers its model spec, its toolset (``--tools``) and its MCP servers (``--mcp``
  commands and ``--mcp-url`` URLs, kept together as JSON in the session's metadata): a later
  call without the flags reuses what is stored, one with either replaces both. Keys and base
  URLs of models are never stored.
* Both are settled before the session is opened: an unknown stored toolset is a `CLIError`
  (the flag overrides it), and a model that cannot be built leaves the session as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import _frontend
from .._frontend import SettingError
from ._common import EXIT_USAGE, CLIError

if TYPE_CHECKING:
    from ..models import Model
    from ..store import Session, SQLiteStore
    from ..tools import Tool, ToolSource

TOOLSETS = ("demo", "none")
TOOLS_KEY = "tools"  # the session metadata key of the toolset name
MCP_KEY = "mcp"  # the session metadata key of the MCP servers: {"stdio": [...], "http": [...]}


def db_path(args: argparse.Namespace) -> tuple[str, bool]:
    """The database path, and whether it is the default one (whose directory we may create)."""
    if args.db:
        return os.path.expanduser(args.db), False
    from ..store import default_db_path

    return default_db_path(), "LLM_WORKER_DB" not in os.environ


def open_store(args: argparse.Namespace, *, create: bool = True) -> SQLiteStore | None:
    """The store, or None when ``create`` is False and there is no database yet."""
    from ..store import SQLiteStore

    path, default = db_path(args)
    if not os.path.exists(path):
        if not create:
            return None
        if default:
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return SQLiteStore(path)


def model_spec(args: argparse.Namespace, stored: str | None) -> str:
    spec: str = args.model or stored or os.environ.get("LLM_WORKER_MODEL") or "offline"
    return spec.strip()


def build_model(spec: str, base_url: str | None) -> Model:
    """The model a spec names (`_frontend.build_model`); a bad setting is a usage error."""
    try:
        return _frontend.build_model(spec, base_url)
    except SettingError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None


def _check_model_flag(args: argparse.Namespace) -> None:
    """Build an explicit ``--model`` once, to fail before the database is touched."""
    if args.model:
        build_model(model_spec(args, None), args.base_url)


def _toolset(name: str, session: str | None) -> list[Tool[..., Any]]:
    if name == "demo":
        from .._demo_tools import DEMO_TOOLS

        return list(DEMO_TOOLS)
    if name == "none":
        return []
    raise CLIError(  # stored by another version, or by a program using the store directly
        f"session {session!r} uses the toolset {name!r}, which this llm-worker does not know; "
        f"choose one with --tools ({' or '.join(TOOLSETS)})"
    )


def _mcp_setting(args: argparse.Namespace) -> str | None:
    """The MCP servers the flags name, as stored; None when neither flag was given."""
    commands = [c for c in (getattr(args, "mcp", None) or []) if c.strip() != "none"]
    urls = [u for u in (getattr(args, "mcp_url", None) or []) if u.strip() != "none"]
    if not (getattr(args, "mcp", None) or getattr(args, "mcp_url", None)):
        return None
    return json.dumps({"stdio": commands, "http": urls})


def _mcp_servers(setting: str | None, session: str | None) -> list[ToolSource]:
    """The MCP servers of a stored (or just given) setting; each started when first needed."""
    if not setting:
        return []
    try:
        parsed = json.loads(setting)
        commands = [shlex.split(line) for line in parsed.get("stdio", [])]
        urls = [str(url) for url in parsed.get("http", [])]
    except (ValueError, AttributeError, TypeError):
        unreadable = f"session {session!r} has unreadable MCP settings; give --mcp again"
        raise CLIError(unreadable) from None
    if not commands and not urls:
        return []
    try:
        from ..mcp import MCPServer
    except ImportError as exc:
        raise CLIError(f"--mcp needs the mcp extra: {exc}", EXIT_USAGE) from None
    servers: list[ToolSource] = []
    for argv in commands:
        if not argv:
            raise CLIError("--mcp needs a command, e.g. --mcp 'uvx mcp-server-time'", EXIT_USAGE)
        servers.append(MCPServer.stdio(argv[0], args=argv[1:]))
    servers.extend(MCPServer.http(url) for url in urls)
    return servers


@dataclass
class Opened:
    """A session opened for a command, with the model, spec and tools it runs with."""

    session: Session
    model: Model
    spec: str
    tools: list[Tool[..., Any] | ToolSource]


@contextlib.contextmanager
def session_for(args: argparse.Namespace, kind: str) -> Iterator[Opened]:
    """The store and the session a ``run`` or ``chat`` uses, both closed when the block ends
    (what the worker committed is saved, the session's lock released)."""
    _check_model_flag(args)
    store = open_store(args)
    assert store is not None
    with store:
        opened = _open_session(store, args, kind)
        with opened.session:
            yield opened


def _open_session(store: SQLiteStore, args: argparse.Namespace, kind: str) -> Opened:
    """Open the named session (or a fresh one) with the model and tools its flags and
    stored settings call for; explicit flags are stored for the next call."""
    from ..store import SessionNotFound

    stored_model: str | None = None
    stored_tools: str | None = None
    stored_mcp: str | None = None
    if args.session:
        with contextlib.suppress(SessionNotFound):
            info = store.session_info(args.session)
            stored_model, stored_tools = info.model, info.metadata.get(TOOLS_KEY)
            stored_mcp = info.metadata.get(MCP_KEY)
    given_mcp = _mcp_setting(args)
    tools: list[Tool[..., Any] | ToolSource] = [
        *_toolset(args.tools or stored_tools or "none", args.session),
        *_mcp_servers(given_mcp if given_mcp is not None else stored_mcp, args.session),
    ]
    spec = model_spec(args, stored_model)
    model = build_model(spec, args.base_url)  # before the session: a bad spec changes nothing
    settings = {TOOLS_KEY: args.tools} if args.tools else {}
    if given_mcp is not None:
        settings[MCP_KEY] = given_mcp
    metadata = settings or None
    if args.session:
        try:
            session = store.open_session(
                args.session, model=spec, system=args.system, metadata=metadata
            )
        except ValueError as exc:  # a name the store refuses (control characters, too long)
            raise CLIError(f"bad session name {args.session!r}: {exc}", EXIT_USAGE) from None
    else:
        session = _fresh_session(store, kind, spec, args.system, metadata)
    return Opened(session, model, spec, tools)


def _fresh_session(
    store: SQLiteStore, kind: str, spec: str, system: str | None, metadata: dict[str, str] | None
) -> Session:
    from ..store import SessionLocked, SessionNotFound

    base = datetime.now().strftime(f"{kind}-%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        name = base if attempt == 1 else f"{base}-{attempt}"
        try:
            store.session_info(name)
            continue  # taken
        except SessionNotFound:
            pass
        try:
            session = store.open_session(name, model=spec, system=system, metadata=metadata)
        except SessionLocked:
            continue
        if session.history:  # another process created it in between: leave it alone
            session.close()
            continue
        return session
    raise CLIError("could not find a free session name")
