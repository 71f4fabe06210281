"""`ChatRegistry`: one session and one Worker per active chat, on the CLI's SQLite store.

Invariants:
* A chat is *active* while at least one request uses it (a stream, a Stop). The first one opens
  the session (taking its lock) and builds the worker on it exactly as the CLI does
  (`_frontend.session_worker`); the last one to leave closes the session, so between
  messages ``llm-worker chat --session ID`` can continue the same chat, and vice versa.
* A session reopened after a restart or a ``kill -9`` is recovered by the store; before a new
  message its pending calls are answered (as the CLI does) — a "continue" runs them instead.
* Everything here is synchronous (the store writes in the event-loop thread, like the CLI):
  no await, so a cancellation never leaves a chat half-registered.
* ``cancel`` reaches only a run that is active or starting; on an idle chat it is a no-op that
  never touches a later run (the worker's own guarantee).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..store import SessionLocked, SessionNotFound, SQLiteStore
from ._requests import ApiError
from ._settings import WebSettings

if TYPE_CHECKING:
    from ..models import Model
    from ..store import Session
    from ..tools import Tool
    from ..worker import Worker

__all__ = ["Chat", "ChatRegistry"]

logger = logging.getLogger("llm_worker.web")

TOOLS_KEY = "tools"  # the CLI's session metadata key for the toolset
TITLE_KEY = "title"


@dataclass(eq=False)
class Chat:
    """An active chat: its session, its worker, and how many requests use it."""

    name: str
    session: Session
    worker: Worker
    users: int = 0


class ChatRegistry:
    """The active chats of one service. Not thread-safe: use it from the event loop."""

    def __init__(self, store: SQLiteStore, settings: WebSettings) -> None:
        self.store = store
        self.settings = settings
        self._chats: dict[str, Chat] = {}
        self._models: dict[str, Model] = {}
        self._owned_models: list[Model] = []

    # -- reading ------------------------------------------------------------------------------

    @property
    def active(self) -> int:
        """How many chats are open (each holds its session's lock)."""
        return len(self._chats)

    @property
    def running(self) -> int:
        """How many chats have a run going."""
        return sum(1 for chat in self._chats.values() if chat.worker.running)

    def is_running(self, name: str) -> bool:
        chat = self._chats.get(name)
        return chat is not None and chat.worker.running

    # -- chats --------------------------------------------------------------------------------

    def acquire(self, name: str, *, first_text: str | None, settle: bool) -> Chat:
        """The chat ``name``, opened (and created) if needed; release it with `release`.

        ``settle``: answer calls a crashed or paused run left pending (before new input).
        Raises `ApiError`: 400 for a name the store refuses, 409 when another process has it.
        """
        chat = self._chats.get(name)
        if chat is None:
            chat = self._open(name, first_text, settle)
            self._chats[name] = chat
        chat.users += 1
        return chat

    def release(self, chat: Chat) -> None:
        """One user less; the last one closes the session (what was said is saved)."""
        chat.users -= 1
        if chat.users > 0 or self._chats.get(chat.name) is not chat:
            return
        del self._chats[chat.name]
        try:
            chat.session.close()
        except Exception:  # the items stay in the error; the next open reports it too
            logger.exception("chat %r: closing its session failed", chat.name)

    def cancel(self, name: str, reason: str | None) -> bool:
        """Stop the chat's active or starting run; False when there is none."""
        chat = self._chats.get(name)
        if chat is None:
            if not self._exists(name):
                raise ApiError(404, f"no chat {name!r}")
            return False
        return chat.worker.cancel(reason or "stopped by the user")

    def cancel_all(self, reason: str) -> int:
        """Stop every run (the server is shutting down); how many were stopped."""
        return sum(chat.worker.cancel(reason) for chat in list(self._chats.values()))

    def delete(self, name: str) -> None:
        if name in self._chats:
            raise ApiError(409, f"chat {name!r} is in use; stop it first")
        try:
            self.store.delete_session(name)
        except SessionNotFound:
            raise ApiError(404, f"no chat {name!r}") from None
        except SessionLocked:
            raise ApiError(409, f"chat {name!r} is open in another process") from None
        except ValueError as exc:
            raise ApiError(400, f"bad chat id: {exc}") from None

    async def aclose(self) -> None:
        """Close the models this registry built (their HTTP clients).

        Cancellation: each close is attempted; a cancellation stops the remaining ones.
        """
        for model in self._owned_models:
            close = getattr(model, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        self._owned_models.clear()
        self._models.clear()

    # -- internals ----------------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        try:
            self.store.session_info(name)
        except (SessionNotFound, ValueError):
            return False
        return True

    def _open(self, name: str, first_text: str | None, settle: bool) -> Chat:
        from .._frontend import session_worker

        stored_model: str | None = None
        stored_tools: str | None = None
        new = True
        with contextlib.suppress(SessionNotFound, ValueError):
            info = self.store.session_info(name)
            stored_model, stored_tools = info.model, info.metadata.get(TOOLS_KEY)
            new = False
        spec, model = self._model(stored_model)
        tools, tools_name = self._tools(stored_tools)
        metadata: dict[str, str | None] = {}
        if tools_name is not None:
            metadata[TOOLS_KEY] = tools_name
        if new and first_text is not None:  # the chat list shows it
            metadata[TITLE_KEY] = " ".join(first_text.split())[:80]
        try:
            session = self.store.open_session(
                name, model=spec, system=self.settings.system, metadata=metadata or None
            )
        except SessionLocked:
            raise ApiError(409, f"chat {name!r} is open in another process") from None
        except ValueError as exc:
            raise ApiError(400, f"bad chat id: {exc}") from None
        try:
            if settle and session.pending_calls:
                session.settle_pending()
            worker = session_worker(session, model, tools)
        except BaseException:
            session.close()
            raise
        return Chat(name, session, worker)

    def _model(self, stored: str | None) -> tuple[str | None, Model]:
        """The model for a chat: the factory's, the server's spec, or the session's."""
        import os

        factory = self.settings.model_factory
        if factory is not None:  # the program owns (and closes) what its factory makes
            return None, factory()
        spec = (
            self.settings.model or stored or os.environ.get("LLM_WORKER_MODEL") or "offline"
        ).strip()
        model = self._models.get(spec)
        if model is None:
            from .._frontend import SettingError, build_model

            try:
                model = build_model(spec, self.settings.base_url)
            except SettingError as exc:
                raise ApiError(400, str(exc)) from None
            self._models[spec] = model
            self._owned_models.append(model)
        return spec, model

    def _tools(self, stored: str | None) -> tuple[list[Tool[..., Any]], str | None]:
        """The chat's tools and the toolset name to store (None: a program's own list)."""
        chosen = self.settings.tools
        if chosen is not None and not isinstance(chosen, str):
            return list(chosen), None
        name = chosen or stored or "none"
        if name == "demo":
            from .._demo_tools import DEMO_TOOLS

            return list(DEMO_TOOLS), name if chosen else None
        if name != "none":
            raise ApiError(409, f"this chat uses the toolset {name!r}, which the server lacks")
        return [], name if chosen else None
