"""`serve`: run an app on Hypercorn, on whichever of asyncio or trio is running.

Invariants:
* One shutdown path: when ``stop`` is set (or SIGINT/SIGTERM arrives, with ``signals``), every
  chat's run is stopped first ("the server is shutting down"), so open streams deliver what was
  kept and ``abort`` and end; then Hypercorn closes gracefully (bounded by ``grace``) and the
  app's lifespan closes the store.
* No access log: request lines could carry a token; errors go to the ``llm_worker.web`` logger.
"""

from __future__ import annotations

import logging
import signal

import anyio
from starlette.applications import Starlette

from ._app import SHUTDOWN_REASON, Service

__all__ = ["bind_address", "serve"]

logger = logging.getLogger("llm_worker.web")


def bind_address(host: str, port: int) -> str:
    """``host:port`` as Hypercorn binds it (IPv6 in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


async def serve(
    app: Starlette,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    stop: anyio.Event | None = None,
    signals: bool = False,
    grace: float = 5.0,
) -> None:
    """Serve ``app`` until ``stop`` is set (or a signal, with ``signals=True``).

    Cancellation: cancelling the caller stops the server at once (runs end as ``external``).
    """
    from hypercorn.config import Config

    config = Config()
    config.bind = [bind_address(host, port)]
    config.graceful_timeout = grace
    config.accesslog = None
    config.errorlog = logger
    stop = stop or anyio.Event()
    service: Service | None = getattr(app.state, "service", None)

    async def shutdown_trigger() -> None:
        async with anyio.create_task_group() as group:
            if signals:
                group.start_soon(_wait_for_signal, stop)
            await stop.wait()
            group.cancel_scope.cancel()
        if service is not None and service._registry is not None:
            service.registry.cancel_all(SHUTDOWN_REASON)

    if _on_trio():
        from hypercorn.trio import serve as hypercorn_serve
    else:
        from hypercorn.asyncio import serve as hypercorn_serve  # type: ignore[assignment]
    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]


async def _wait_for_signal(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async for _ in received:
            stop.set()
            return


def _on_trio() -> bool:
    """Whether this task runs on trio: anyio runs on asyncio or trio, and asyncio has a loop."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False
