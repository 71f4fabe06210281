"""From flags, environment and the session's stored settings to a store, a session and a model.

Invariants:
* Everything here runs in the main thread, before the event loop starts; nothing awaits, so a
  Ctrl-C here is a plain `KeyboardInterrupt` (``main`` reports it; nothing was said yet).
* A bad model spec, a missing key or a bad environment variable is a usage `CLIError` raised
  *before* the session is opened or written: a mistake changes nothing on disk.
* A session remembers its model spec: a later call without ``--model`` reuses it, one with
  ``--model`` replaces it. Keys and base URLs are never stored.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._common import EXIT_USAGE, MODEL_HELP, CLIError

if TYPE_CHECKING:
    from ..models import Model
    from ..store import Session, SQLiteStore


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
    """The model a spec names; bad specs and missing keys become a usage `CLIError`."""
    provider, _, variant = spec.partition(":")
    if provider == "offline":
        if variant not in ("", "reasoning"):
            raise CLIError(f"unknown model spec {spec!r}; expected one of: {MODEL_HELP}", 2)
        from ..models.offline import OfflineModel

        return OfflineModel(pace=_offline_pace(), reasoning=variant == "reasoning")
    from ..models import UnknownModelSpec, resolve_model
    from ..models._http import MissingCredentials  # imports the HTTP stack: only for providers

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


def check_model_flag(args: argparse.Namespace) -> None:
    """Build an explicit ``--model`` once, to fail before the database is touched."""
    if args.model:
        build_model(model_spec(args, None), args.base_url)


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


def tools(args: argparse.Namespace) -> list[Any]:
    if args.tools == "demo":
        from .._demo_tools import DEMO_TOOLS

        return list(DEMO_TOOLS)
    return []


def open_session(
    store: SQLiteStore, args: argparse.Namespace, kind: str
) -> tuple[Session, Model, str]:
    """Open the named session (or a fresh one) with the model its flags and history call for."""
    from ..store import SessionNotFound

    stored: str | None = None
    if args.session:
        with contextlib.suppress(SessionNotFound):
            stored = store.session_info(args.session).model
    spec = model_spec(args, stored)
    model = build_model(spec, args.base_url)  # before the session: a bad spec changes nothing
    if args.session:
        session = store.open_session(args.session, model=spec, system=args.system)
    else:
        session = _fresh_session(store, kind, spec, args.system)
    return session, model, spec


def _fresh_session(store: SQLiteStore, kind: str, spec: str, system: str | None) -> Session:
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
            session = store.open_session(name, model=spec, system=system)
        except SessionLocked:
            continue
        if session.history:  # another process created it in between: leave it alone
            session.close()
            continue
        return session
    raise CLIError("could not find a free session name")
