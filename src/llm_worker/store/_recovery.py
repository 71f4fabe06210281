"""What a reopened session found of a last run that did not end normally, and what it tells.

Invariants:
* A last run that ended ``finished``, ``paused`` or ``limit_reached`` needs no recovery. Any
  other end (``crashed``, ``cancelled``, ``failed``; a run that never ended is ``crashed``) is
  a `Recovery`, with the calls it left without a result.
* The model is told once: a `Note` is appended only if the run added something to the history,
  no call is pending (a note may not come between calls and their results) and the history
  does not already end with an interruption note.
* A failure's reason is an error message, which may quote a server's response: it is never put
  into a text the model is told.
* The texts the model is told come from `llm_worker.history`, like every other such text.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..history import recovery_note
from ..items import Item, Note, ToolCall, unanswered_calls
from ._records import RunRecord

__all__ = ["Recovery"]

NORMAL_ENDS = frozenset({"finished", "paused", "limit_reached"})


@dataclass(frozen=True)
class Recovery:
    """How a session's last run ended abnormally, found when the session was opened.

    ``outcome`` is ``crashed`` (the process died mid-run), ``cancelled`` or ``failed``.
    ``pending_calls`` are calls left without a result: ``resume()`` runs them again (so a tool
    killed mid-call runs at least once more), `Session.settle_pending` answers them instead.
    ``note`` is the `Note` appended to tell the model its previous turn was interrupted (None
    when the run had added nothing, or when calls are pending: a note may not precede results,
    so an attached worker adds it after them).
    """

    outcome: str
    kind: str | None
    reason: str | None
    pending_calls: tuple[ToolCall, ...] = ()
    note: Note | None = None

    def describe(self) -> str:
        """One line for people: what happened to the last run."""
        if self.outcome == "crashed":
            text = "the last run did not finish: its process stopped (crash or kill)"
        elif self.outcome == "cancelled":
            text = f"the last run was interrupted ({self.reason or self.kind})"
        else:
            text = f"the last run failed ({self.reason or self.kind})"
        if self.pending_calls:
            names = ", ".join(call.name for call in self.pending_calls)
            text += f"; {len(self.pending_calls)} tool call(s) never finished ({names})"
        return text


def recover(history: list[Item], ran: set[str], last_run: RunRecord | None) -> Recovery | None:
    """What to tell about (and append for) a last run that did not end normally.

    ``ran``: the ids of the runs that added items to ``history``.
    """
    if last_run is None or last_run.outcome in NORMAL_ENDS:
        return None
    outcome = last_run.outcome or "crashed"
    pending = tuple(unanswered_calls(history))
    note: Note | None = None
    already = bool(history) and isinstance(history[-1], Note) and history[-1].kind == "interrupted"
    if last_run.run_id in ran and not pending and not already:
        note = recovery_note(outcome, last_run.kind, last_run.reason)
    return Recovery(outcome, last_run.kind, last_run.reason, pending, note)
