"""``llm-worker serve``: the chat page and its API on one port (see `llm_worker.web`).

Invariants:
* Flags are checked before anything listens: a bad model spec, token or origin is a usage
  error, a database that is not ours a store error, and a missing ``web`` extra names the
  install command.
* Beyond loopback the API is never open: without ``--token`` a random one is made and printed,
  in the URL to open (its fragment, which browsers do not send to servers or logs).
* SIGINT or SIGTERM stops the server gracefully: every run is stopped and keeps what it said,
  open streams end with ``abort``, sessions are saved and released; the exit status is 0.
* Keys are never printed: the banner shows the model spec and the URL only.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import secrets
import socket
import threading
import time
import webbrowser

from ._common import EXIT_OK, EXIT_USAGE, CLIError, stderr_line

BACKENDS = ("asyncio", "trio")


def _toolset(given: list[str] | None) -> str | None:
    """The web service takes a toolset name ('demo' or 'none'), not the user's own tools."""
    if not given:
        return None
    if len(given) > 1 or given[0] not in ("demo", "none"):
        raise CLIError("serve takes --tools demo or --tools none", EXIT_USAGE)
    return given[0]


def cmd_serve(args: argparse.Namespace) -> int:
    _check_web_extra(args.backend)
    from ..web import WebSettings, create_app

    if args.model:
        from ._config import build_model

        build_model(args.model.strip(), args.base_url)  # a bad spec fails before we listen
    token = args.token
    try:
        settings = WebSettings(
            model=args.model.strip() if args.model else None,
            tools=_toolset(args.tools),
            db=args.db,
            system=args.system,
            base_url=args.base_url,
            host=args.host,
            token=token,
            allowed_origins=tuple(args.allow_origin or ()),
        )
    except ValueError as exc:  # a short token, a malformed origin
        raise CLIError(str(exc), EXIT_USAGE) from None
    from ._config import open_store

    probe = open_store(args)  # a file that is not ours is a StoreError line before we listen
    if probe is not None:
        probe.close()
    if not settings.loopback_only and token is None:
        token = secrets.token_urlsafe(24)
        settings = dataclasses.replace(settings, token=token)
    _check_port(args.host, args.port)
    app = create_app(settings)
    url = _page_url(args.host, args.port, token)
    stderr_line(f"serving {url} (Ctrl-C stops)")
    if not settings.loopback_only:
        stderr_line("reachable beyond this machine: every API call needs the token in the URL")
    import anyio

    if args.open:
        threading.Thread(target=_open_when_listening, args=(url, args.port), daemon=True).start()
    try:
        anyio.run(_serve, app, args.host, args.port, backend=args.backend)
    except OSError as exc:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    stderr_line("stopped")
    return EXIT_OK


async def _serve(app: object, host: str, port: int) -> None:
    from ..web import serve

    await serve(app, host=host, port=port, signals=True)  # type: ignore[arg-type]


def _check_port(host: str, port: int) -> None:
    """A port we cannot bind is one error line, not the server's start-up noise."""
    if not 0 <= port <= 65535:
        raise CLIError(f"--port must be 0-65535, got {port}", EXIT_USAGE)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _open_when_listening(url: str, port: int) -> None:
    """Open the page once the port accepts connections (at most 30 s of trying)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    webbrowser.open(url)


def _page_url(host: str, port: int, token: str | None) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    fragment = f"#token={token}" if token else ""
    return f"http://{shown}:{port}/{fragment}"


def _check_web_extra(backend: str) -> None:
    needed = ["starlette", "hypercorn"] + (["trio"] if backend == "trio" else [])
    missing = []
    for name in needed:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise CLIError(
            f"serve needs {' and '.join(missing)}: pip install 'llm-worker[web]'"
            + (" trio" if "trio" in missing else ""),
            EXIT_USAGE,
        )
