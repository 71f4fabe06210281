"""The conversation history, and every text the model is told about what happened in it.

Invariants:
* `History.append` is synchronous (no await), so whatever is cancelled, the history never holds
  half an item or half a commit, and every listener sees each committed item exactly once.
* ``History`` keeps, as items are appended, the calls still without a result, every call id
  ever used and whether it is still valid as it is, so clean-up, id checks and requests never
  rescan the history.
* `repair` is the one place that makes a history valid for every provider: call ids unique; each
  run of calls answered exactly once, by results right after it; results without a call (or a
  second result) left out. The worker applies it once before each request; providers translate,
  never repair.
* Every text the model is told about a stop, a failure or a call that did not run is built here
  and nowhere else: notes, synthetic results, tool-outcome wordings. None of them ever quotes an
  error's message from a server (it may echo a key), only what kind of thing went wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from .cancel import Cause
from .errors import ModelError
from .items import (
    Attachment,
    Item,
    Note,
    ToolCall,
    ToolResult,
    ToolResultStatus,
    replace,
)

# -- what the model is told ------------------------------------------------------------------------

MISSING_RESULT = "Not executed: no result was recorded for this call."
CUT_OFF = "Not executed: its arguments were cut off when the turn was interrupted."
NEVER_FINISHED = "Not executed: its arguments never finished streaming."
MOVED_ON = "Not executed: the run was paused and the user moved on."
#: Fillers for a provider that accepts no empty user text, or no history that starts with the model.
EMPTY_USER_TEXT = "(empty message)"
CONVERSATION_START = "(The conversation so far follows.)"
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


#: Why a tool that takes no `ToolContext` got no grace period: it could not have used one.
NO_GRACE = "the tool cannot see a stop (it takes no ToolContext), so it had no grace period"


def abandoned(
    call: ToolCall,
    why: str,
    partial: str = "",
    attachments: tuple[Attachment, ...] = (),
    *,
    graceless: bool = False,
) -> ToolResult:
    """A tool left running in its thread; what it reported is kept. ``graceless``: it could not
    see the stop, so it was left at once (`NO_GRACE`)."""
    if graceless:
        text = f"Abandoned: {why}; {NO_GRACE} and was left running."
    else:
        text = f"Abandoned: the tool ignored cancellation ({why}) and was left running."
    if partial:
        text = f"{partial}\n[{text} The output above is partial.]"
    return answer(call, text, "abandoned", attachments)


def stopped(call: ToolCall, why: str, *, graceless: bool = False) -> ToolResult:
    """A tool stopped before it returned anything (``graceless``: at once, see `NO_GRACE`)."""
    if graceless:
        return answer(call, f"Cancelled: {why}; {NO_GRACE}.", "cancelled")
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

    __slots__ = ("_after_result", "_broken", "_call_ids", "_items", "_listeners", "_unanswered")

    def __init__(self, items: Iterable[Item] = ()) -> None:
        self._items: list[Item] = list(items)
        self._listeners: list[Callable[[Sequence[Item]], None]] = []
        self._unanswered: dict[str, ToolCall] = {}
        self._call_ids: set[str] = set()
        self._broken = False  # something `repair` would change; once broken, always
        self._after_result = False
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

    @property
    def valid(self) -> bool:
        """True if every provider accepts the history as it is (`repair` would change nothing)."""
        return not (self._broken or self._unanswered)

    def for_request(self) -> tuple[Item, ...]:
        """The items to send: themselves when valid (known without a scan), else `repair`'s."""
        return tuple(self._items if self.valid else repair(self._items))

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
        """Keep the indexes, and note anything `repair` would have to change: a reused call
        id, a result for no waiting call, a message (or a later response's call) while calls
        wait for results."""
        for item in items:
            if isinstance(item, ToolCall):
                if item.call_id in self._call_ids or (self._after_result and self._unanswered):
                    self._broken = True
                self._unanswered[item.call_id] = item
                self._call_ids.add(item.call_id)
            elif isinstance(item, ToolResult):
                if self._unanswered.pop(item.call_id, None) is None:
                    self._broken = True
            elif self._unanswered:
                self._broken = True
            self._after_result = isinstance(item, ToolResult)


def repair(items: Sequence[Item]) -> Sequence[Item]:
    """``items`` made valid for every provider; ``items`` itself when nothing needs repair.

    * Call ids are unique: a call reusing an earlier call's id gets a fresh one (``id_2``, ...),
      and the results that answer it follow it.
    * A run of calls is answered right after its last call, before anything else: by the first
      result that names each call (wherever it was, in the order the results came), then
      `MISSING_RESULT` for calls nobody answered, in call order.
    * A result that answers no call (an orphan, or a second answer) is left out.
    """
    if History(items).valid:
        return items
    answers, renamed = _match_results(items)
    repaired: list[Item] = []
    group: list[ToolCall] = []

    def close_group() -> None:
        found = sorted(
            (answers[call.call_id] for call in group if call.call_id in answers),
            key=lambda pair: pair[0],
        )
        repaired.extend(result for _, result in found)
        repaired.extend(
            answer(call, MISSING_RESULT, "cancelled")
            for call in group
            if call.call_id not in answers
        )
        group.clear()

    after_result = False
    for position, item in enumerate(items):
        if isinstance(item, ToolCall):
            if after_result:  # a call after results belongs to a later response
                close_group()
            call = renamed.get(position, item)
            group.append(call)
            repaired.append(call)
        elif not isinstance(item, ToolResult):  # results are placed with their calls
            close_group()
            repaired.append(item)
        after_result = isinstance(item, ToolResult)
    close_group()
    return repaired


def _match_results(
    items: Sequence[Item],
) -> tuple[dict[str, tuple[int, ToolResult]], dict[int, ToolCall]]:
    """Each call's answer (keyed by its final id, with the answer's position) and the calls
    that needed a fresh id (keyed by position). A result answers the latest call of its id."""
    used = {item.call_id for item in items if isinstance(item, ToolCall)}
    seen: set[str] = set()
    latest: dict[str, str] = {}  # id as written -> final id of the latest call written so
    renamed: dict[int, ToolCall] = {}
    answers: dict[str, tuple[int, ToolResult]] = {}
    for position, item in enumerate(items):
        if isinstance(item, ToolCall):
            final = item.call_id
            if final in seen:
                final = _fresh_id(item.call_id, used)
                used.add(final)
                renamed[position] = replace(item, call_id=final)
            seen.add(final)
            latest[item.call_id] = final
        elif isinstance(item, ToolResult):
            final = latest.get(item.call_id, "")
            if final and final not in answers:
                if final != item.call_id:
                    item = replace(item, call_id=final)
                answers[final] = (position, item)
    return answers, renamed


def _fresh_id(call_id: str, used: set[str]) -> str:
    suffix = 2
    while f"{call_id}_{suffix}" in used:
        suffix += 1
    return f"{call_id}_{suffix}"
