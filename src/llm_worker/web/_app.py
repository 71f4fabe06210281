"""`create_app`: the ASGI application of ``llm-worker serve`` — the page and the JSON/SSE API.

Invariants:
* Routes only translate HTTP to the registry and back: the chat logic is `ChatRegistry`'s, the
  wire format `UIStreamEncoder`'s, the checks `RequestGuard`'s.
* The store is opened on first use (or at start-up by the lifespan) and closed at shutdown,
  after every run was stopped (reason "the server is shutting down"), so a mounted sub-app
  without a lifespan works too.
* Every error an API route returns is JSON ``{"error": ...}`` with a 4xx/5xx status; nothing
  that failed in one request changes what the server serves next.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._error_base import LLMWorkerError
from ..store import SessionNotFound, SQLiteStore, StoreError
from ._chats import TITLE_KEY, ChatRegistry
from ._messages import ui_messages
from ._requests import ApiError, CancelRequest, ChatRequest, error_response, read_model
from ._security import RequestGuard
from ._settings import WebSettings
from ._stream import ChatStream

__all__ = ["Service", "create_app"]

SHUTDOWN_REASON = "the server is shutting down"


class Service:
    """The registry behind one app, built on first use."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self._registry: ChatRegistry | None = None

    @property
    def registry(self) -> ChatRegistry:
        if self._registry is None:
            self._registry = ChatRegistry(_open_store(self.settings.db), self.settings)
        return self._registry

    async def aclose(self) -> None:
        """Stop every run, close the models and the store (saving what is unsaved).

        Cancellation: the store is closed whatever happens to the models' closing.
        """
        registry, self._registry = self._registry, None
        if registry is None:
            return
        registry.cancel_all(SHUTDOWN_REASON)
        try:
            await registry.aclose()
        finally:
            registry.store.close()


def _open_store(db: str | None) -> SQLiteStore:
    if db:
        return SQLiteStore(os.path.expanduser(db))
    from ..store import default_db_path

    path = default_db_path()
    if "LLM_WORKER_DB" not in os.environ:
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return SQLiteStore(path)


def create_app(settings: WebSettings | None = None, **options: Any) -> Starlette:
    """The service as an ASGI app; ``options`` are `WebSettings` fields (``model="offline"``).

    Mount it in your own Starlette/FastAPI app, or serve it with any ASGI server;
    ``app.state.service`` gives the registry (``.registry``) for inspection.
    """
    if settings is None:
        settings = WebSettings(**options)
    elif options:
        raise TypeError("pass either settings or keyword options, not both")
    service = Service(settings)
    static = resources.files("llm_worker.web") / "static"
    static_dir = str(static)

    async def index(request: Request) -> Response:
        return FileResponse(os.path.join(static_dir, "index.html"), headers=_PAGE_HEADERS)

    async def chat(request: Request) -> Response:
        body = await read_model(request, ChatRequest, limit=settings.max_body_bytes)
        text = None if body.continues else body.user_text()
        if text is not None and len(text) > settings.max_message_chars:
            raise ApiError(
                413, f"the message is longer than {settings.max_message_chars} characters"
            )
        return _AsResponse(ChatStream(service.registry, body.id, text))

    async def list_chats(request: Request) -> Response:
        registry = service.registry
        chats = [
            {
                "id": info.name,
                "title": info.metadata.get(TITLE_KEY) or info.name,
                "items": info.items,
                "updatedAt": info.updated_at.isoformat(),
                "status": info.status,
                "running": registry.is_running(info.name),
            }
            for info in registry.store.sessions()
        ]
        return JSONResponse({"chats": chats})

    async def get_chat(request: Request) -> Response:
        name = request.path_params["chat_id"]
        registry = service.registry
        try:
            info = registry.store.session_info(name)
            items = registry.store.load_history(name)
        except (SessionNotFound, ValueError):
            raise ApiError(404, f"no chat {name!r}") from None
        last = info.last_run
        last_stop = None
        if last is not None and last.outcome in ("cancelled", "crashed"):
            last_stop = {"kind": last.kind or last.outcome, "reason": last.reason}
        return JSONResponse(
            {
                "id": name,
                "title": info.metadata.get(TITLE_KEY) or name,
                "running": registry.is_running(name),
                "status": info.status,
                "messages": ui_messages(items, last_stop),
            }
        )

    async def delete_chat(request: Request) -> Response:
        service.registry.delete(request.path_params["chat_id"])
        return JSONResponse({"deleted": True})

    async def cancel_chat(request: Request) -> Response:
        body = await read_model(request, CancelRequest, limit=16_384, empty_ok=True)
        cancelled = service.registry.cancel(request.path_params["chat_id"], body.reason)
        return JSONResponse({"cancelled": cancelled})

    async def health(request: Request) -> Response:
        registry = service.registry
        return JSONResponse({"ok": True, "active": registry.active, "running": registry.running})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.registry  # noqa: B018 - open the store now: a bad database fails at start-up
        try:
            yield
        finally:
            await service.aclose()

    routes = [
        Route("/", index),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/chats", list_chats),
        Route("/api/chats/{chat_id:str}", get_chat, methods=["GET"]),
        Route("/api/chats/{chat_id:str}", delete_chat, methods=["DELETE"]),
        Route("/api/chats/{chat_id:str}/cancel", cancel_chat, methods=["POST"]),
        Route("/api/health", health),
        Mount("/static", StaticFiles(directory=static_dir), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=_middleware(settings),
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            StoreError: _store_error,
            LLMWorkerError: _store_error,
        },
        lifespan=lifespan,
    )
    app.state.service = service
    return app


def _middleware(settings: WebSettings) -> list[Middleware]:
    """The guard first (outermost); CORS for the allowed origins inside it."""
    stack = [Middleware(RequestGuard, settings=settings)]
    if settings.allowed_origins:
        from starlette.middleware.cors import CORSMiddleware

        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=[origin.rstrip("/") for origin in settings.allowed_origins],
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["content-type", "authorization", "x-llm-worker-token"],
                expose_headers=["x-vercel-ai-ui-message-stream"],
            )
        )
    return stack


_PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class _AsResponse(Response):
    """Lets a route return a raw ASGI streaming app (the chat stream) as its response."""

    def __init__(self, app: ChatStream) -> None:
        self._app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


async def _store_error(request: Request, exc: Exception) -> Response:
    return error_response(500, f"the session store failed: {exc}")
