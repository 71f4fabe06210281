"""Views: how one turn's events become output, and the formatting they share.

Invariants:
* A view is called in the event-loop thread, one event at a time, synchronously: it never
  awaits, so a cancel cannot land half-way through writing an event.
* A view only writes; everything it shows is already committed (or being committed) by the
  worker, so losing output (a closed pipe, a Ctrl-C) never loses history.
* A closed stdout (`BrokenPipeError`) silences stdout and calls ``on_broken_pipe`` once, which
  cancels the turn: a run nobody can see stops instead of running on.
* Model and tool text is never read as rich markup, and never written raw: streamed text goes
  through a `StreamFilter`, whole strings through `visible`, JSON lines through `json_safe`
  (see `_safe`): no escape sequence from a model, a tool or a server reaches the terminal.
  Markdown (`MarkdownView`) is rendered from that filtered text; rich's Markdown reads no markup.
* On a terminal one status line at a time is live (transient): the time spent waiting for the
  model, or the tool running and its last progress message, so a person sees it is alive.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

from pydantic import BaseModel

from ..items import dump_item
from ._common import silence_stdout
from ._safe import StreamFilter, json_safe, visible

if TYPE_CHECKING:
    from rich.console import Console

    from ..events import Event
    from ..items import Item
    from ..store import Session
    from ._runtime import Turn


class View:
    """Turns run events into output. Called in the event-loop thread, one event at a time."""

    def __init__(self) -> None:
        self.on_broken_pipe: Callable[[], object] = lambda: None
        self.broken = False
        self.heard_model = False  # the model said something this turn (for error messages)

    def event(self, event: Event) -> None:
        from ..events import ReasoningDelta, TextDelta, ToolStarted

        if isinstance(event, TextDelta | ReasoningDelta | ToolStarted):
            self.heard_model = True
        try:
            self._event(event)
        except BrokenPipeError:
            self._broke()

    def _broke(self) -> None:
        if not self.broken:
            self.broken = True
            silence_stdout()
            self.on_broken_pipe()

    def _event(self, event: Event) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """The turn is over: end the last line."""


class JsonView(View):
    """``--json``: every event as one JSON line, flushed at once (items are already on disk)."""

    def __init__(self, out: IO[str]) -> None:
        super().__init__()
        self.out = out

    def _event(self, event: Event) -> None:
        self.out.write(json_line(event) + "\n")
        self.out.flush()

    def session_line(self, name: str, model: str) -> None:
        """The first line: which session the events are committed to."""
        line = json.dumps({"type": "session", "session": name, "model": model})
        self.out.write(json_safe(line) + "\n")
        self.out.flush()


def item_json_line(item: Item) -> str:
    """A stored item as one line of JSON, lossless (`llm_worker.items.dump_item`), safe to
    print."""
    from ..items import dump_item

    return json_safe(dump_item(item))


def json_line(model: BaseModel | Item) -> str:
    """``model`` as one line of JSON, safe to print (see `json_safe`).

    Text that is not valid Unicode (lone surrogates, which pydantic cannot encode) is written
    as JSON escapes instead of failing the whole line.
    """
    if not isinstance(model, BaseModel):  # a history item: its text is valid Unicode already
        return json_safe(dump_item(model))
    try:
        text = model.model_dump_json()
    except ValueError:  # PydanticSerializationError: a lone surrogate
        text = json.dumps(model.model_dump(mode="json"), ensure_ascii=False)
    return json_safe(text)


class PlainView(View):
    """Piped output: the answer's text only, as it arrives; turns separated by a line break."""

    def __init__(self, out: IO[str]) -> None:
        super().__init__()
        self.out = out
        self.at_line_start = True
        self.wrote = False
        self.text = StreamFilter()

    def _event(self, event: Event) -> None:
        from ..events import TextDelta, TurnStarted

        if isinstance(event, TurnStarted):
            self._write(self.text.end())
            if not self.at_line_start:
                self._write("\n")
        elif isinstance(event, TextDelta) and event.text:
            self._write(self.text.feed(event.text))

    def _write(self, text: str) -> None:
        if not text:
            return
        self.out.write(text)
        self.out.flush()
        self.at_line_start = text.endswith("\n")
        self.wrote = True

    def finish(self) -> None:
        try:
            self._write(self.text.end())
            if not self.at_line_start:
                self._write("\n")
        except BrokenPipeError:
            self._broke()


ICONS = {
    "ok": ("✓", "green"),
    "error": ("✗", "red"),
    "interrupted": ("⏹", "yellow"),
    "cancelled": ("⏹", "yellow"),
    "abandoned": ("⚠", "red"),
    "skipped": ("↷", "yellow"),
}


class TerminalView(View):
    """A terminal: streamed text word-wrapped to the width, tool calls as they run, a spinner
    while waiting for the model, reasoning dimmed. Model text is never read as rich markup."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.column = 0
        self.reasoning = False
        self._spinner: Any = None
        self._status: _Elapsed | None = None
        self._running: dict[str, str] = {}  # tool call id -> name, while tools run
        self._answer = StreamFilter()
        self._thinking = StreamFilter()

    # the status line: what it waits for and since when (transient: it leaves no trace)
    def _spin(self, label: str = "waiting for the model") -> None:
        from rich.live import Live

        self._stop_spinning()
        self._close_block()
        if self.column:
            self._newline()
        self._status = _Elapsed(label)
        self._spinner = Live(
            self._status,
            console=self.console,
            transient=True,
            refresh_per_second=12,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._spinner.start()

    def _stop_spinning(self) -> None:
        spinner, self._spinner = self._spinner, None
        self._status = None
        if spinner is not None:
            spinner.stop()

    def _close_block(self) -> None:
        """End a live block of rendered text (`MarkdownView`); plain text has none."""

    def _event(self, event: Event) -> None:
        from ..events import (
            ReasoningDelta,
            ReasoningEnd,
            ReasoningStart,
            Retrying,
            RunCancelled,
            RunFailed,
            RunFinished,
            TextDelta,
            ToolFinished,
            ToolProgress,
            ToolStarted,
            TurnStarted,
        )

        if isinstance(event, TurnStarted):
            self._settle()
            self._spin()
        elif isinstance(event, TextDelta):
            self._stop_spinning()
            if self.reasoning:
                self._end_reasoning()
            self._text(self._answer.feed(event.text))
        elif isinstance(event, ReasoningStart):
            self._stop_spinning()
            self._settle()
            self.reasoning = True
            self._styled("thinking: ", "dim italic")
        elif isinstance(event, ReasoningDelta):
            self._stop_spinning()
            self._text(self._thinking.feed(event.text), style="dim italic")
        elif isinstance(event, ReasoningEnd):
            self._end_reasoning()
        elif isinstance(event, ToolStarted):
            self._stop_spinning()
            self._settle()
            self._line(f"  ⚙ {event.name}({format_arguments(event.arguments)})", "cyan")
            self._running[event.call_id] = event.name
            self._spin(f"{event.name} running")
        elif isinstance(event, ToolFinished):
            self._stop_spinning()
            self._settle()
            result = event.result
            icon, style = ICONS.get(result.status, ("•", ""))
            status = "" if result.status == "ok" else f" [{result.status}]"
            self._line(f"  {icon} {result.name}{status} → {_first_line(result.content)}", style)
            self._running.pop(result.call_id, None)
            if self._running:
                self._spin(f"{', '.join(self._running.values())} running")
        elif isinstance(event, ToolProgress) and event.message:
            if self._status is not None:
                self._status.detail = visible(_first_line(event.message), one_line=True)
            else:
                self._settle()
                self._line(f"    … {event.name}: {_first_line(event.message)}", "dim")
        elif isinstance(event, Retrying):
            self._stop_spinning()
            self._settle()
            self._line(
                f"  ↻ retrying in {event.delay:.1f}s (attempt {event.attempt}): {event.error}",
                "yellow dim",
            )
            self._spin()
        elif isinstance(event, RunFinished | RunCancelled | RunFailed):
            self._stop_spinning()
            self._settle()

    def _settle(self) -> None:
        """Write what the stream filters held back (a ``\r``, the start of a secret)."""
        if self._thinking.holding:
            self._text(self._thinking.end(), style="dim italic")
        if self._answer.holding:
            self._text(self._answer.end())

    def _end_reasoning(self) -> None:
        if self._thinking.holding:
            self._text(self._thinking.end(), style="dim italic")
        self.reasoning = False
        self._newline()

    def _text(self, text: str, style: str | None = None) -> None:
        """Write streamed text (already made safe), breaking lines at spaces before the
        terminal would."""
        width = max(20, self.console.width - 1)
        pieces: list[str] = []
        for word in _words(text):
            if word == "\n":
                pieces.append("\n")
                self.column = 0
            elif word.isspace():
                if self.column:
                    pieces.append(word)
                    self.column += len(word)
            else:
                if self.column and self.column + len(word) > width:
                    while pieces and pieces[-1].isspace() and pieces[-1] != "\n":
                        pieces.pop()
                    pieces.append("\n")
                    self.column = 0
                pieces.append(word)
                self.column += len(word)
        self._emit("".join(pieces), style)

    def _styled(self, text: str, style: str) -> None:
        """Write a short styled fragment (no line breaks) and count its width."""
        self._emit(text, style)
        self.column += len(text)

    def _emit(self, text: str, style: str | None) -> None:
        if style:
            from rich.text import Text

            self.console.print(Text(text, style=style), end="", soft_wrap=True, highlight=False)
        else:
            self.console.file.write(text)
            self.console.file.flush()

    def _newline(self) -> None:
        self.console.file.write("\n")
        self.console.file.flush()
        self.column = 0

    def _line(self, text: str, style: str) -> None:
        """One whole line of status (a tool call, a retry): made safe here, as one line."""
        from rich.text import Text

        self._close_block()
        if self.column:
            self._newline()
        line = Text(visible(text, one_line=True), style=style)
        line.truncate(max(20, self.console.width - 1), overflow="ellipsis")
        self.console.print(line, highlight=False, soft_wrap=True)
        self.column = 0

    def finish(self) -> None:
        self._stop_spinning()
        self._settle()
        self._close_block()
        if self.column:
            self._newline()


class _Elapsed:
    """A live status line: a spinner, what it waits for, the seconds since it began."""

    def __init__(self, label: str) -> None:
        from rich.spinner import Spinner

        self.label = visible(label, one_line=True)
        self.detail = ""
        self.started = time.monotonic()
        self._spinner = Spinner("dots", style="dim")

    def __rich_console__(self, console: Console, options: Any) -> Any:
        from rich.text import Text

        seconds = time.monotonic() - self.started
        detail = f" · {self.detail}" if self.detail else ""
        self._spinner.text = Text(
            f"{self.label} {seconds:.1f}s{detail} · Ctrl-C stops", style="dim"
        )
        yield self._spinner


class MarkdownView(TerminalView):
    """A terminal with the answer rendered as Markdown, live while it streams (rich)."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self._block: Any = None
        self._block_text = ""
        self._last_render = 0.0

    def _text(self, text: str, style: str | None = None) -> None:
        if style is not None or self.reasoning:
            self._close_block()
            super()._text(text, style)
            return
        if not text:
            return
        from rich.live import Live
        from rich.markdown import Markdown

        self._block_text += text
        if self._block is None:
            if self.column:
                self._newline()
            self._block = Live(
                Markdown(self._block_text),
                console=self.console,
                auto_refresh=False,
                vertical_overflow="visible",
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._block.start()
        now = time.monotonic()
        if now - self._last_render >= 0.05 or text.endswith("\n"):
            self._last_render = now
            self._block.update(Markdown(self._block_text), refresh=True)
        if self._block_is_full():
            self._close_block()  # its lines are final: the next paragraph starts a new block

    def _block_is_full(self) -> bool:
        """A live block taller than half the screen is closed at a paragraph's end (outside a
        code fence): rich can only redraw what is still on the screen, so a block scrolling
        off it would be drawn twice."""
        text = self._block_text
        return (
            text.count("\n") > max(8, self.console.height // 2)
            and text.endswith("\n\n")
            and text.count("```") % 2 == 0
        )

    def _close_block(self) -> None:
        block, self._block = self._block, None
        if block is not None:
            from rich.markdown import Markdown

            block.update(Markdown(self._block_text), refresh=True)
            block.stop()
            self.column = 0
        self._block_text = ""


def terminal_view(console: Console, *, plain: bool) -> TerminalView:
    """The view for a terminal: Markdown rendered live, or word-wrapped text (``--plain``)."""
    return TerminalView(console) if plain else MarkdownView(console)


def _words(text: str) -> list[str]:
    """``text`` as words, runs of blanks, and single line breaks, in order."""
    return _WORDS_RE.findall(text)


_WORDS_RE = re.compile(r"\n|[^\S\n]+|\S+")


def format_arguments(arguments: dict[str, object]) -> str:
    parts = [
        f"{key}={json.dumps(value, ensure_ascii=False, default=str)}"
        for key, value in arguments.items()
    ]
    return shorten(", ".join(parts), 80)


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else "(no output)"
    return first + (" …" if len(lines) > 1 else "")


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_line(model: str, turn: Turn, session: Session) -> str:
    usage = turn.usage
    total, complete = _session_tokens(session.history)
    parts = [model]
    if usage.input_tokens or usage.output_tokens:
        parts.append(f"{_count(usage.input_tokens)} in / {_count(usage.output_tokens)} out tokens")
    parts.append(f"{turn.seconds:.1f}s")
    tokens = ""
    if total:
        tokens = f" ({total:,} tokens)" if complete else f" (at least {total:,} tokens)"
    parts.append(f"session {session.name}{tokens}")
    return " · ".join(parts)


def _count(tokens: int | None) -> str:
    """A token count for people: unknown (the provider did not say) is "?", not 0."""
    return "?" if tokens is None else f"{tokens:,}"


def _session_tokens(history: Sequence[Item]) -> tuple[int, bool]:
    """The tokens the session's answers reported, and whether every answer reported both
    counts (an answer whose provider said nothing is unknown, not zero)."""
    from ..items import AssistantMessage

    total, complete = 0, True
    for item in history:
        if not isinstance(item, AssistantMessage):
            continue
        usage = item.usage
        if usage is None or usage.input_tokens is None or usage.output_tokens is None:
            complete = False
        if usage is not None:
            total += (usage.input_tokens or 0) + (usage.output_tokens or 0)
    return total, complete
