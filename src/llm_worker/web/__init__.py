"""The local web service: a chat page with a Stop button and the AI SDK UI message stream API.

::

    from llm_worker.web import create_app
    app = create_app(model="offline", tools="demo", db="chats.db")   # any ASGI server

``llm-worker serve`` runs it on Hypercorn (asyncio or trio). ``POST /api/chat`` speaks the
Vercel AI SDK UI message stream protocol (v1), so a ``useChat`` front-end works unchanged;
``POST /api/chats/{id}/cancel`` stops a chat's run; a client that disconnects stops its run too.
Every chat is a session of the same SQLite store as the command line.
"""

from ._app import create_app
from ._protocol import HEADERS as UI_MESSAGE_STREAM_HEADERS
from ._protocol import UIStreamEncoder
from ._requests import ApiError
from ._server import serve
from ._settings import WebSettings

__all__ = [
    "UI_MESSAGE_STREAM_HEADERS",
    "ApiError",
    "UIStreamEncoder",
    "WebSettings",
    "create_app",
    "serve",
]
