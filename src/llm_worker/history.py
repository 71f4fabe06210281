"""The conversation history, and every text the model is told about what happened in it.

Invariants:
* `History.append` is synchronous (no await), so whatever is cancelled, the history never holds
  half an item or half a commit, and every listener sees each committed item exactly once.
* ``History`` keeps, as items are appended, the calls still without a result and every call id
  ever used, so clean-up and id checks never rescan the history.
* `repair` is the one place that makes a history valid for every provider: each call answered
  exactly once, by a result before the next message; results without a call (or a second result)
  left out. The worker applies it once before each request; providers translate, never repair.
* Every text the model is told about a stop, a failure or a call that did not run is built here
  and nowhere else: notes, synthetic results, tool-outcome wordings. None of them ever quotes an
  error's message from a server (it may echo a key), only what kind of thing went wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from .cancel import Cause
from .errors import ModelError
from .items import (
    AssistantMessage,
    Attachment,
    Item,
    Note,
    ToolCall,
    ToolResult,
    ToolResultStatus,
    UserMessage,
)

# -- what the model is told ------------------------------------------------------------------------

MISSING_RESULT = "Not executed: no result was recorded for this call."
CUT_OFF = "Not executed: its arguments were cut off when the turn was interrupted."
NEVER_FINISHED = "Not executed: its arguments never finished streaming."
MOVED_ON = "Not executed: the run was paused and the user moved on."
CRASH_RESULT = (
    "Not executed: the process running the previous turn stopped (crash or kill) before this "
    "call finished; it may have run in part."
)


def answer(
    call: ToolCall,
    content: str,
    status: ToolResultStatus,
    attachments: tuple[Attachment, ...] = (),
) -> ToolResult:
    """A result for ``call``: the one way results are made, real or synthetic."""
    return ToolResult(
        call_id=call.call_id,
        name=call.name,
        content=content,
        status=status,
        attachments=attachments,
    )


def unanswered(call: ToolCall, cause: Cause | None) -> ToolResult:
    """The synthetic answer of a call left without a result when a run ended.

    ``cause`` is None when the run had paused and new input moved on from it.
    """
    if not call.complete:
        return answer(call, CUT_OFF, "cancelled")
    if cause is None:
        return answer(call, MOVED_ON, "cancelled")
    return answer(call, f"Not executed: the run was interrupted ({_why(cause)}).", "cancelled")


def refusal(call: ToolCall, *, tool_exists: bool) -> ToolResult | None:
    """An answer for a call that cannot run at all (cut off, unknown tool, bad JSON), or None."""
    if not call.complete:
        return answer(call, NEVER_FINISHED, "cancelled")
    if not tool_exists:
        return answer(call, f"Error: there is no tool named {call.name!r}.", "error")
    if call.parse_error is not None:
        return answer(call, f"Error: {call.parse_error}", "error")
    return None


def invalid_arguments(call: ToolCall, message: str) -> ToolResult:
    return answer(call, f"Error: {message}", "error")


def skipped(call: ToolCall, reason: str) -> ToolResult:
    return answer(call, f"Skipped: {reason}", "skipped")


def tool_error(call: ToolCall, error: BaseException) -> ToolResult:
    """A tool raised: the model sees the exception (a tool's own words, meant for it)."""
    return answer(call, f"Error: {type(error).__name__}: {error}", "error")


def partial_output(
    call: ToolCall,
    partial: str,
    why: str,
    *,
    overran: bool,
    attachments: tuple[Attachment, ...] = (),
) -> ToolResult:
    """A tool returned after it was asked to stop: its output, marked partial."""
    note = "; it ignored cancellation for a while" if overran else ""
    text = f"{partial}\n[Interrupted: {why}{note}; the output above is partial.]"
    return answer(call, text, "interrupted", attachments)


def abandoned(
    call: ToolCall, why: str, partial: str = "", attachments: tuple[Attachment, ...] = ()
) -> ToolResult:
    """A tool that ignored cancellation and was left running; what it reported is kept."""
    text = f"Abandoned: the tool ignored cancellation ({why}) and was left running."
    if partial:
        text = f"{partial}\n[{text} The output above is partial.]"
    return answer(call, text, "abandoned", attachments)


def stopped(call: ToolCall, why: str) -> ToolResult:
    return answer(call, f"Cancelled: {why}.", "cancelled")


def interruption_note(cause: Cause) -> Note:
    """What the next run tells the model about an interrupted turn: who stopped it, not details."""
    text = (
        f"[The previous turn was interrupted ({_why(cause)}). The last assistant message and "
        "tool results above may be incomplete.]"
    )
    return Note(kind="interrupted", text=text)


def recovery_note(outcome: str, kind: str | None, reason: str | None) -> Note:
    """The note for a session reopened after a run that did not end normally.

    ``outcome`` is what the store recorded: ``"crashed"`` (no end marker), ``"failed"`` (its
    ``reason`` is an error message and is never told) or ``"cancelled"`` (``kind`` and the
    ``reason`` given to ``cancel()``).
    """
    if outcome == "crashed":
        why = "crash: the process running it stopped before the turn ended"
    elif outcome == "failed":
        why = "it failed"
    else:
        why = f"{kind}: {reason}" if kind and reason else (kind or reason or outcome)
    text = (
        f"[The previous turn was interrupted ({why}). The last assistant message and tool "
        "results above may be incomplete.]"
    )
    return Note(kind="interrupted", text=text)


def _why(cause: Cause) -> str:
    leaf = next(iter(cause.leaves()), cause)
    if leaf.tag == "interrupt":
        return f"{leaf.kind}: {leaf.reason}" if leaf.reason else leaf.kind
    error, origin = leaf.error, leaf.origin or ""
    if isinstance(error, ModelError):
        status = f" (HTTP {error.status_code})" if error.status_code else ""
        return f"the model provider failed{status}"
    if origin.startswith("call"):
        return "a tool failed"
    if origin.startswith("hook"):
        return "a hook failed"
    return f"an unexpected {type(error).__name__}" if error is not None else "an error"


# -- the history -----------------------------------------------------------------------------------


class History:
    """An append-only list of items, with the indexes the worker needs kept up to date."""

    __slots__ = ("_call_ids", "_items", "_listeners", "_unanswered")

    def __init__(self, items: Iterable[Item] = ()) -> None:
        self._items: list[Item] = list(items)
        self._listeners: list[Callable[[Sequence[Item]], None]] = []
        self._unanswered: dict[str, ToolCall] = {}
        self._call_ids: set[str] = set()
        self._index(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> list[Item]:
        """The items themselves (not a copy): read, never mutate."""
        return self._items

    @property
    def unanswered(self) -> list[ToolCall]:
        """Calls without a result yet, in the order they were made."""
        return list(self._unanswered.values())

    @property
    def call_ids(self) -> set[str]:
        """Every call id in the history (live: it grows as calls are appended)."""
        return self._call_ids

    def on_append(self, listener: Callable[[Sequence[Item]], None]) -> Callable[[], None]:
        """Call ``listener(items)`` synchronously after each append; return its remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def append(self, items: Sequence[Item]) -> None:
        """Append ``items`` and tell the listeners. Synchronous: never half-done."""
        if not items:
            return
        self._items.extend(items)
        self._index(items)
        for listener in self._listeners:
            listener(items)

    def _index(self, items: Iterable[Item]) -> None:
        for item in items:
            if isinstance(item, ToolCall):
                self._unanswered[item.call_id] = item
                self._call_ids.add(item.call_id)
            elif isinstance(item, ToolResult):
                self._unanswered.pop(item.call_id, None)


def repair(items: Sequence[Item]) -> Sequence[Item]:
    """``items`` made valid for every provider; ``items`` itself when nothing needs repair.

    Each call is answered, before the next message, by exactly one result (a missing one gets
    `MISSING_RESULT`); a result whose call is not waiting for it (an orphan, or a second answer)
    is left out. Calls and results keep their order otherwise.
    """
    if _is_valid(items):
        return items
    repaired: list[Item] = []
    waiting: dict[str, ToolCall] = {}

    def answer_waiting() -> None:
        repaired.extend(answer(call, MISSING_RESULT, "cancelled") for call in waiting.values())
        waiting.clear()

    for item in items:
        if isinstance(item, ToolCall):
            waiting[item.call_id] = item
            repaired.append(item)
        elif isinstance(item, ToolResult):
            if waiting.pop(item.call_id, None) is not None:
                repaired.append(item)
        else:
            answer_waiting()
            repaired.append(item)
    answer_waiting()
    return repaired


def _is_valid(items: Sequence[Item]) -> bool:
    waiting: set[str] = set()
    for item in items:
        if isinstance(item, ToolCall):
            waiting.add(item.call_id)
        elif isinstance(item, ToolResult):
            if item.call_id not in waiting:
                return False
            waiting.discard(item.call_id)
        elif waiting and isinstance(item, AssistantMessage | UserMessage | Note):
            return False
    return not waiting
