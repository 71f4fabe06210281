"""`RequestGuard`: the ASGI middleware that keeps a local service local.

Invariants:
* Every HTTP request is checked before any route sees it: a ``Host`` that is not one of the
  server's names is refused (DNS rebinding), and so is an ``Origin`` (or a ``Sec-Fetch-Site:
  cross-site``) that is neither the page's own origin nor one of ``allowed_origins``
  (cross-site POSTs from other pages the user visits). Requests without ``Origin`` (curl, a
  server-side ``useChat`` transport) pass. CORS headers for allowed origins are Starlette's
  `CORSMiddleware`, inside this guard.
* With a token, every ``/api/`` request must carry it (``Authorization: Bearer``, or the
  ``x-llm-worker-token`` header); the page itself and its static files need none. Tokens are
  compared in constant time and never logged or echoed.
* Refusals are JSON (``{"error": ...}``): 403 for a foreign host or origin, 401 for a missing
  or wrong token.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from ._requests import error_response
from ._settings import LOOPBACK_HOSTS, WebSettings

__all__ = ["RequestGuard"]

TOKEN_HEADER = "x-llm-worker-token"


class RequestGuard:
    """Refuses foreign ``Host`` / ``Origin`` headers and, with a token, calls without it."""

    def __init__(self, app: ASGIApp, settings: WebSettings) -> None:
        self.app = app
        self.settings = settings
        self.hosts = {host.lower().strip("[]") for host in LOOPBACK_HOSTS}
        self.hosts.update(host.lower().strip("[]") for host in settings.allowed_hosts)
        if not settings.any_host:
            self.hosts.add(settings.host.lower().strip("[]"))
        self.token = settings.token.encode() if settings.token else None
        self.origins = {origin.rstrip("/").lower() for origin in settings.allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Cancellation: nothing of its own; the wrapped app's."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            status, message = refusal
            await error_response(status, message, close=True)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        host = headers.get("host", "")
        if not self._host_allowed(host):
            return 403, "this server does not serve that host name"
        origin = headers.get("origin")
        allowed = origin is not None and origin.rstrip("/").lower() in self.origins
        scheme = scope.get("scheme", "http")
        if origin is not None and not allowed and not _same_origin(origin, host, scheme):
            return 403, "requests from other sites are refused"
        if headers.get("sec-fetch-site") == "cross-site" and not allowed:
            return 403, "requests from other sites are refused"
        path: str = scope.get("path", "")
        preflight = allowed and scope.get("method") == "OPTIONS"  # carries no credentials
        if self.token is not None and path.startswith("/api/") and not preflight:
            given = _bearer(headers.get("authorization")) or headers.get(TOKEN_HEADER, "")
            if not hmac.compare_digest(given.encode(), self.token):
                return 401, "a valid token is required (open the URL the server printed)"
        return None

    def _host_allowed(self, host: str) -> bool:
        if not host:
            return False
        if self.settings.any_host:
            return True
        return _hostname(host) in self.hosts


def _hostname(netloc: str) -> str:
    """``Host``-header value → lower-case host name without port or IPv6 brackets."""
    try:
        parsed = urlsplit(f"//{netloc}")
        return (parsed.hostname or "").lower()
    except ValueError:
        return ""


def _same_origin(origin: str, host: str, scheme: str) -> bool:
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return False  # "null" (a sandboxed frame, a file) and other schemes
    return parsed.netloc.lower() == host.lower() and parsed.scheme == scheme


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None
