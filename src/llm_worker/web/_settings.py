"""`WebSettings`: what `create_app` and ``llm-worker serve`` are configured with.

Invariants:
* Frozen, and checked once when built (a bad value is a `ValueError` before any request).
* Holds no key: the model is a spec (keys come from the environment, as for the CLI) or a
  factory the embedding program owns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models import Model
    from ..tools import Tool

__all__ = ["LOOPBACK_HOSTS", "WebSettings"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class WebSettings:
    """The service's settings, the same as ``llm-worker serve``'s flags.

    ``model``: a spec (``"offline"``, ``"openai:gpt-4o-mini"``, …) used for every chat, or None
    to use each session's stored spec (``$LLM_WORKER_MODEL`` or ``offline`` for a new one);
    ``model_factory`` (a program's own model, e.g. a `ScriptedModel` per chat) overrides both.
    ``tools``: ``"demo"``, ``"none"``, a list of tools, or None for each session's stored set.
    ``db``: the session database (None: ``$LLM_WORKER_DB`` or the user data directory).
    ``host``: the address the server is bound to; with a loopback address only loopback
    ``Host`` headers are served; ``allowed_hosts`` adds names. ``allowed_origins`` lists other
    origins whose pages may call the API (CORS; e.g. ``"http://localhost:5173"`` for a
    ``useChat`` front-end served by a dev server). ``token``: when set, every ``/api/`` call
    must carry it.
    """

    model: str | None = None
    model_factory: Callable[[], Model] | None = None
    tools: str | Sequence[Tool[..., Any]] | None = None
    db: str | None = None
    system: str | None = None
    base_url: str | None = None
    host: str = "127.0.0.1"
    allowed_hosts: Sequence[str] = ()
    allowed_origins: Sequence[str] = ()
    token: str | None = None
    max_body_bytes: int = 1_000_000
    max_message_chars: int = 200_000
    shutdown_grace: float = 5.0

    def __post_init__(self) -> None:
        for origin in self.allowed_origins:
            if not origin.startswith(("http://", "https://")) or origin.rstrip("/").count("/") > 2:
                raise ValueError(f"an allowed origin is scheme://host[:port], got {origin!r}")
        if isinstance(self.tools, str) and self.tools not in ("demo", "none"):
            raise ValueError(f"tools must be 'demo', 'none' or a list of tools, got {self.tools!r}")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("a token must be at least 8 characters long")
        if self.max_body_bytes < 1024 or self.max_message_chars < 1:
            raise ValueError("max_body_bytes must be >= 1024 and max_message_chars >= 1")

    @property
    def loopback_only(self) -> bool:
        """True when the server is reachable from this machine only."""
        return self.host.strip("[]") in LOOPBACK_HOSTS or self.host.startswith("127.")

    @property
    def any_host(self) -> bool:
        """Bound to every interface: any ``Host`` is served (the token then guards the API)."""
        return self.host.strip("[]") in WILDCARD_HOSTS
