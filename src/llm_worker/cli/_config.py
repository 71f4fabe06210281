"""From flags, environment and the session's stored settings to a store, a session, a model and
tools (the worker on the session is `_frontend.session_worker`'s).

Invariants:
* Everything here runs in the main thread and nothing awaits, before the event loop starts.
* A bad model spec, a missing key, a bad option or tool, an unknown session to continue or
  resume is a `CLIError` raised *before* any session is opened or written: a mistake changes
  nothing on disk (``--resume``/``--continue`` do not even create the database).
* A session remembers its model spec, its endpoint (``--base-url``: the URL, never the key),
  its model options (``-o``), its tools (``--tools``) and its MCP servers (``--mcp``,
  ``--mcp-url``) in its metadata: a later call without a flag reuses what is stored, one with
  it replaces it. So continuing a session never sends it to another endpoint than it used.
* A new session is created only when something is said: `Prepared.open` creates it, which
  ``run`` does at once and ``chat`` at its first message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import _frontend
from .._frontend import SettingError
from . import _tools
from ._common import EXIT_USAGE, CLIError

if TYPE_CHECKING:
    from ..models import Model, ModelSettings
    from ..store import Session, SQLiteStore
    from ..tools import Tool, ToolSource

TOOLS_KEY = "tools"  # session metadata: the --tools words as a JSON list (old: one name)
MCP_KEY = "mcp"  # the MCP servers: {"stdio": [...], "http": [...]}
BASE_URL_KEY = "base_url"  # the endpoint of the model (never a key)
OPTIONS_KEY = "options"  # the -o model options, a JSON object of strings
#: Options every model takes (`ModelSettings`); others go into an OpenAI-compatible body.
SETTING_OPTIONS = {"temperature": float, "max_tokens": int}


def db_path(args: argparse.Namespace) -> tuple[str, bool]:
    """The database path, and whether it is the default one (whose directory we may create)."""
    if args.db:
        return os.path.expanduser(args.db), False
    from ..store import default_db_path

    return default_db_path(), "LLM_WORKER_DB" not in os.environ


def open_store(
    args: argparse.Namespace, *, create: bool = True, reading: bool = False
) -> SQLiteStore | None:
    """The store, or None when ``create`` is False and there is no database yet.

    ``reading``: the command only reads, so a database it may not write is opened read-only.
    A file that cannot be used is a usage error (status 2): the ``--db`` given is wrong.
    """
    from ..store import SQLiteStore, StoreError

    path, default = db_path(args)
    if not os.path.exists(path):
        if not create:
            return None
        if default:
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    read_only = reading and not _writable(path)
    try:
        return SQLiteStore(path, read_only=read_only) if read_only else SQLiteStore(path)
    except StoreError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None


def _writable(path: str) -> bool:
    directory = os.path.dirname(os.path.abspath(path))
    return os.access(path, os.W_OK) and os.access(directory, os.W_OK | os.X_OK)


def model_spec(args: argparse.Namespace, stored: str | None) -> str:
    spec: str = args.model or stored or os.environ.get("LLM_WORKER_MODEL") or "offline"
    return spec.strip()


def build_model(spec: str, base_url: str | None) -> Model:
    """The model a spec names (`_frontend.build_model`); a bad setting is a usage error."""
    try:
        return _frontend.build_model(spec, base_url)
    except SettingError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None


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


def _options(args: argparse.Namespace, stored: str | None) -> dict[str, str]:
    """The stored options updated by the ``-o NAME VALUE`` flags ('none' removes one)."""
    options: dict[str, str] = {}
    if stored:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            options = {str(k): str(v) for k, v in json.loads(stored).items()}
    for name, value in getattr(args, "option", None) or []:
        name = name.strip().replace("-", "_")
        if value.strip().lower() == "none":
            options.pop(name, None)
        else:
            options[name] = value
    return options


def apply_options(model: Model, spec: str, options: dict[str, str]) -> ModelSettings | None:
    """Check the options against the model; return its settings (others go in its body)."""
    from ..models import ModelSettings

    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, text in options.items():
        kind = SETTING_OPTIONS.get(name)
        if kind is not None:
            try:
                values[name] = kind(text)
            except ValueError:
                raise CLIError(
                    f"-o {name} expects a {kind.__name__}, got {text!r}", EXIT_USAGE
                ) from None
        elif hasattr(model, "extra_body"):
            try:
                extra[name] = json.loads(text)
            except ValueError:
                extra[name] = text
        else:
            known = ", ".join(SETTING_OPTIONS)
            raise CLIError(f"{spec} takes no option {name!r} (it takes {known})", EXIT_USAGE)
    if extra:
        body = dict(getattr(model, "extra_body", None) or {})
        body.update(extra)
        model.extra_body = body  # type: ignore[attr-defined]
    return ModelSettings(**values) if values else None


@dataclass
class Prepared:
    """A session to use (existing, or to be created by `open`) with its model and tools."""

    store: SQLiteStore
    name: str | None
    exists: bool
    model: Model
    spec: str
    tools: list[Tool[..., Any] | ToolSource]
    settings: ModelSettings | None
    system: str | None
    metadata: dict[str, str | None] = field(default_factory=dict)
    kind: str = "run"

    def open(self) -> Session:
        """Open the session, creating it if it is new; stores the settings given by flags."""
        if self.name is None:
            return _fresh_session(self.store, self.kind, self.spec, self.system, self.metadata)
        try:
            return self.store.open_session(
                self.name, model=self.spec, system=self.system, metadata=self.metadata or None
            )
        except ValueError as exc:  # a name the store refuses (control characters, too long)
            raise CLIError(f"bad session name {self.name!r}: {exc}", EXIT_USAGE) from None


@contextlib.contextmanager
def prepared(args: argparse.Namespace, kind: str) -> Iterator[Prepared]:
    """The store and the session settings a ``run`` or ``chat`` uses; the store is closed
    when the block ends (saving what the worker committed, releasing the session's lock)."""
    if args.session and args.continue_:
        raise CLIError("give either --session NAME or --continue, not both", EXIT_USAGE)
    if args.model:  # fail before the database is touched
        build_model(model_spec(args, None), None if _offline(args.model) else args.base_url)
    existing_only = bool(getattr(args, "resume", False) or args.continue_)
    store = open_store(args, create=not existing_only)
    if store is None:
        where = f"no database at {db_path(args)[0]}"
        if args.session:
            raise CLIError(f"no session named {args.session!r} to resume ({where})")
        raise CLIError(f"no session to continue yet ({where})")
    with store:
        yield _prepare(store, args, kind)


def _offline(spec: str) -> bool:
    return spec.strip().partition(":")[0] == "offline"


def _prepare(store: SQLiteStore, args: argparse.Namespace, kind: str) -> Prepared:
    from ..store import SessionNotFound

    name: str | None = args.session
    if args.continue_:
        infos = store.sessions()
        if not infos:
            raise CLIError("no session to continue yet")
        name = infos[0].name
    stored: dict[str, str] = {}
    stored_model: str | None = None
    exists = False
    if name is not None:
        try:
            info = store.session_info(name)
            exists = True
            stored_model, stored = info.model, dict(info.metadata)
        except SessionNotFound:
            if getattr(args, "resume", False):
                raise CLIError(f"no session named {name!r} to resume") from None
    spec = model_spec(args, stored_model)
    metadata: dict[str, str | None] = {}
    base_url = _base_url_for(args, spec, stored_model, stored, metadata)
    model = build_model(spec, base_url)  # before the session: a bad spec changes nothing
    options = _options(args, stored.get(OPTIONS_KEY))
    settings = apply_options(model, spec, options)
    if getattr(args, "option", None):
        metadata[OPTIONS_KEY] = json.dumps(options) if options else None
    if args.tools:
        words = _tools.normalise(args.tools)
        metadata[TOOLS_KEY] = _tools.dump(words)
    else:
        words = _tools.load_setting(stored.get(TOOLS_KEY))
    given_mcp = _mcp_setting(args)
    if given_mcp is not None:
        metadata[MCP_KEY] = given_mcp
    tools: list[Tool[..., Any] | ToolSource] = [
        *_tools.load_tools(words, stored_in=None if args.tools else name),
        *_mcp_servers(given_mcp if given_mcp is not None else stored.get(MCP_KEY), name),
    ]
    return Prepared(store, name, exists, model, spec, tools, settings, args.system, metadata, kind)


def _base_url_for(
    args: argparse.Namespace,
    spec: str,
    stored_model: str | None,
    stored: dict[str, str],
    metadata: dict[str, str | None],
) -> str | None:
    """The endpoint: the flag (then stored), else the session's; none for the offline model."""
    if _offline(spec):
        if args.base_url:
            raise CLIError("--base-url has no effect on the offline model", EXIT_USAGE)
        return None
    if args.base_url:
        metadata[BASE_URL_KEY] = args.base_url
        return str(args.base_url)
    if stored_model != spec and stored.get(BASE_URL_KEY):  # another model: not the old endpoint
        metadata[BASE_URL_KEY] = None
        return None
    return stored.get(BASE_URL_KEY)


def _fresh_session(
    store: SQLiteStore,
    kind: str,
    spec: str,
    system: str | None,
    metadata: dict[str, str | None],
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
            session = store.open_session(name, model=spec, system=system, metadata=metadata or None)
        except SessionLocked:
            continue
        if session.history:  # another process created it in between: leave it alone
            session.close()
            continue
        return session
    raise CLIError("could not find a free session name")
