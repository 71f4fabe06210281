"""``sessions``, ``show`` and ``delete``: reading and removing what the store holds.

Invariants:
* Reading never creates anything: with no database yet, ``sessions`` says so and ``show`` or
  ``delete`` fail, and no file or directory is made.
* Listing and showing take no session lock (the store reads the last committed state), so they
  work while a ``run`` or ``chat`` holds the session; ``delete`` refuses a session in use.
* No event loop and no await: a Ctrl-C is a plain `KeyboardInterrupt` (``main``: status 130)
  and the database is left as it was (each write is one transaction).
* Content is never read as rich markup (cells and lines are `rich.text.Text`), and never
  printed raw: everything stored — names, model specs, system prompts, messages, tool output,
  run reasons — goes through `_safe.visible` (JSON output through `_safe.json_safe`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import _config
from ._common import EXIT_OK, CLIError, consoles, isatty
from ._config import TOOLS_KEY
from ._safe import json_safe, visible
from ._views import ICONS, format_arguments, item_json_line, shorten

if TYPE_CHECKING:
    from rich.console import Console

    from ..items import Item
    from ..store import SessionInfo, SQLiteStore


def cmd_sessions(args: argparse.Namespace) -> int:
    store = _config.open_store(args, create=False, reading=True)
    infos: list[SessionInfo] = []
    if store is not None:
        with store:
            infos = store.sessions()
    if args.json:
        for info in infos:
            sys.stdout.write(json_safe(json.dumps(_info_json(info))) + "\n")
        return EXIT_OK
    if not infos:
        where = store.path if store is not None else _config.db_path(args)[0]
        sys.stdout.write(visible(f"no sessions yet (database: {where})") + "\n")
        return EXIT_OK
    if isatty(sys.stdout):
        from rich.table import Table
        from rich.text import Text

        stdout, _ = consoles()

        table = Table(box=None, header_style="bold", pad_edge=False)
        for column, justify in (
            ("NAME", "left"),
            ("MODEL", "left"),
            ("ITEMS", "right"),
            ("LAST ACTIVITY", "left"),
            ("STATUS", "left"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for info in infos:
            cells = (info.name, info.model or "", str(info.items), _when(info.updated_at))
            table.add_row(
                *(Text(visible(cell, one_line=True)) for cell in (*cells, info.status)),
                style=_status_style(info.status),
            )
        stdout.print(table)
    else:
        rows: list[tuple[str, ...]] = [("NAME", "MODEL", "ITEMS", "LAST ACTIVITY", "STATUS")]
        for i in infos:
            fields = (i.name, i.model or "-", str(i.items), _local(i.updated_at), i.status or "-")
            rows.append(tuple(visible(cell, one_line=True) for cell in fields))
        widths = [max(len(row[c]) for row in rows) for c in range(5)]
        for row in rows:
            sys.stdout.write(
                "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n"
            )
    return EXIT_OK


def _info_json(info: SessionInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "model": info.model,
        "items": info.items,
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
        "status": info.status,
        "last_run": None
        if info.last_run is None
        else {
            "run_id": info.last_run.run_id,
            "outcome": info.last_run.outcome,
            "kind": info.last_run.kind,
            "reason": info.last_run.reason,
        },
    }


def _status_style(status: str) -> str:
    return {
        "crashed": "red",
        "failed": "red",
        "interrupted": "yellow",
        "in use": "cyan",
        "paused": "yellow",
    }.get(status, "")


def _local(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _when(moment: datetime) -> str:
    """Local time, and how long ago: ``2025-01-02 10:31 (5 min ago)``."""
    seconds = max(0.0, time.time() - moment.timestamp())
    if seconds < 60:
        ago = "just now"
    elif seconds < 3600:
        ago = f"{int(seconds // 60)} min ago"
    elif seconds < 86400:
        ago = f"{int(seconds // 3600)} h ago"
    else:
        ago = f"{int(seconds // 86400)} d ago"
    return f"{moment.astimezone().strftime('%Y-%m-%d %H:%M')} ({ago})"


@contextlib.contextmanager
def _store_of(args: argparse.Namespace, *, reading: bool = False) -> Iterator[SQLiteStore]:
    """The store holding the session ``args.name``: no database or no such session is a
    `CLIError`."""
    from ..store import SessionNotFound

    store = _config.open_store(args, create=False, reading=reading)
    if store is None:
        raise CLIError(
            f"no session named {args.name!r} (no database at {_config.db_path(args)[0]})"
        )
    with store:
        try:
            yield store
        except SessionNotFound as exc:
            raise CLIError(str(exc)) from None


def cmd_show(args: argparse.Namespace) -> int:
    with _store_of(args, reading=True) as store:
        info = store.session_info(args.name)
        history = store.load_history(args.name)
    if args.json:
        for item in history:
            sys.stdout.write(item_json_line(item) + "\n")
        return EXIT_OK
    if args.markdown:
        sys.stdout.write(markdown_transcript(info, history))
        return EXIT_OK
    title = f"session {info.name}"
    toolset = info.metadata.get(TOOLS_KEY, "none")
    details = (
        f" · model {info.model or '-'} · {info.items} items"
        + (f" · tools {toolset}" if toolset != "none" else "")
        + f" · created {_local(info.created_at)} · last activity {_local(info.updated_at)}"
        + (f" · {info.status}" if info.status else "")
    )
    title, details = visible(title, one_line=True), visible(details, one_line=True)
    system = visible(info.system) if info.system else ""
    if not isatty(sys.stdout):
        sys.stdout.write(title + details + "\n")
        if system:
            sys.stdout.write(f"system: {system}\n")
        print_transcript(None, history)
        return EXIT_OK
    from rich.text import Text

    stdout, _ = consoles()
    stdout.print(Text.assemble((title, "bold"), (details, "dim")), highlight=False)
    if system:
        stdout.print(Text(f"system: {system}", style="dim italic"), highlight=False)
    print_transcript(stdout, history)
    return EXIT_OK


def print_transcript(console: Console | None, history: Sequence[Item]) -> None:
    """The conversation, one block per item: styled on ``console``, plain on stdout if None.

    Content is never read as rich markup, and made safe to print (`visible`).
    """
    from ..items import AssistantMessage, Note, ToolCall, ToolResult, UserMessage

    def out(label: str, text: str, style: str = "", label_style: str = "bold") -> None:
        text = visible(text)
        if console is None:
            sys.stdout.write(f"{label}{text}\n")
        else:
            from rich.text import Text

            console.print(Text.assemble((label, label_style), (text, style)), highlight=False)

    for item in history:
        if isinstance(item, UserMessage):
            out("you: ", item.text, label_style="bold cyan")
        elif isinstance(item, AssistantMessage):
            if item.reasoning:
                out("thinking: ", item.reasoning, "dim italic", "dim")
            suffix = " [interrupted]" if item.interrupted else ""
            if item.text or suffix:
                out("assistant: ", item.text.rstrip() + suffix, label_style="bold green")
        elif isinstance(item, ToolCall):
            args = (
                item.raw_arguments if item.arguments is None else format_arguments(item.arguments)
            )
            incomplete = "" if item.complete else " [arguments cut off]"
            out("  tool call: ", f"{item.name}({args}){incomplete}", "cyan", "dim")
        elif isinstance(item, ToolResult):
            status = "" if item.status == "ok" else f" [{item.status}]"
            style = ICONS.get(item.status, ("", ""))[1]
            out(
                "  tool result: ",
                f"{item.name}{status} → {shorten(item.content, 500)}",
                style,
                "dim",
            )
        elif isinstance(item, Note):
            out("note: ", item.text, "dim italic", "dim")


def markdown_transcript(info: SessionInfo, history: Sequence[Item]) -> str:
    """The session as a Markdown document (an export): headings per speaker, tool calls and
    results as fenced blocks. Made safe to print like everything else (`visible`)."""
    from ..items import AssistantMessage, Note, ToolCall, ToolResult, UserMessage

    out = [f"# Session {info.name}", "", f"Model: `{info.model or '-'}`"]
    out.append(f"Created {_local(info.created_at)}, last activity {_local(info.updated_at)}")
    if info.system:
        out += ["", "## System", "", info.system]
    for item in history:
        if isinstance(item, UserMessage):
            out += ["", "## User", "", item.text]
        elif isinstance(item, AssistantMessage):
            out += ["", "## Assistant", ""]
            if item.reasoning:
                out += ["> " + line for line in item.reasoning.splitlines()] + [""]
            out.append(item.text.rstrip() + (" *[interrupted]*" if item.interrupted else ""))
        elif isinstance(item, ToolCall):
            arguments = (
                item.raw_arguments
                if item.arguments is None
                else json.dumps(item.arguments, ensure_ascii=False)
            )
            out += ["", f"**Tool call** `{item.name}`", "", "```json", arguments, "```"]
        elif isinstance(item, ToolResult):
            status = "" if item.status == "ok" else f" ({item.status})"
            out += ["", f"**Tool result** `{item.name}`{status}", "", "```", item.content, "```"]
        elif isinstance(item, Note):
            out += ["", f"*Note: {item.text}*"]
    return visible("\n".join(out)) + "\n"


def cmd_delete(args: argparse.Namespace) -> int:
    with _store_of(args) as store:
        store.delete_session(args.name)
    sys.stdout.write(visible(f"deleted session {args.name}", one_line=True) + "\n")
    return EXIT_OK
