"""What a cancellation sweep checks and what it reports: its modes, invariants and findings.

Invariants of this module: every key a `Violation` names is a key of `INVARIANTS`; a
`SweepReport` only ever grows while its sweep runs (counts and findings are appended, never
rewritten), so reading it afterwards shows every re-run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

SweepMode = Literal["cancel", "token", "thread", "timeout", "supersede", "external"]
"""How each re-run is stopped at its checkpoint (see `cancellation_sweep`)."""

#: Each invariant the sweep checks, with the number of the guarantee it stands for
#: (docs/cancellation.md, "Guarantees").
INVARIANTS: dict[str, str] = {
    "ended": "#3: the run ends (within run_timeout), the cancel notwithstanding",
    "outcome": "#8: a stopped run raises Cancelled with the cause kind of how it was stopped",
    "cancel-lost": "#2: cancel() acknowledges a cancel while the run is in progress",
    "cancel-ignored": "#3: an acknowledged cancel stops the run: no new model event waited "
    "for, model request or tool started after it (unless the run had already completed)",
    "cancel-swallowed": "#8: an outer cancellation re-raises the framework's own exception",
    "boundary": "#8: the run's end event (on_run) matches how it ended",
    "user-message": "#5: the input is in the history exactly once, before the run's answers",
    "streamed-text": "#5: text, reasoning and call arguments streamed to the run are kept",
    "interrupted-flag": "#5: a cut-off message is marked interrupted, a finished one is not",
    "tool-results": "#5: every tool call answered exactly once, right after its turn",
    "tool-output": "#4: a tool's (partial) output is kept in its result; cut calls never run",
    "on-abort": "#6: on_abort runs exactly once per interrupted run, never for a finished one",
    "partial": "#5: err.partial.items / result.items are exactly what the run added",
    "leak": "#9: no task or thread the run started is left running; the worker is idle",
    "reuse": "#10: the worker runs again, its request is valid and tells of the interruption",
    "check": "the user's check(worker, outcome) passes",
}


@dataclass(frozen=True)
class Violation:
    """One broken invariant at one checkpoint: ``invariant`` is a key of `INVARIANTS`."""

    invariant: str
    how: str
    checkpoint: int
    detail: str

    def __str__(self) -> str:
        return f"[{self.how} at checkpoint {self.checkpoint}] {self.invariant}: {self.detail}"


@dataclass
class SweepReport:
    """What a sweep did: the checkpoints the run has, the stride it swept them at, what it found.

    ``cancelled`` counts runs that were stopped, ``completed`` runs that returned normally (of
    which ``late`` returned after an acknowledged cancel that came when the run had no await
    left to notice it at), ``checked`` the calls of the user's ``check``.
    """

    checkpoints: int
    stride: int = 1
    how: str = "cancel"
    runs: int = 0
    cancelled: int = 0
    completed: int = 0
    late: int = 0
    checked: int = 0
    findings: list[Violation] = field(default_factory=list)

    @property
    def violations(self) -> list[str]:
        """Every violation as text: ``[how at checkpoint k] invariant: detail``."""
        return [str(finding) for finding in self.findings]

    @property
    def ok(self) -> bool:
        return not self.findings

    def counts(self) -> dict[str, int]:
        """How many times each invariant was violated, most frequent first."""
        return dict(Counter(finding.invariant for finding in self.findings).most_common())

    def summary(self) -> str:
        """One line: runs and outcomes, then each violated invariant with its count."""
        line = (
            f"{self.how}: {self.checkpoints} checkpoints (stride {self.stride}), {self.runs} runs: "
            f"{self.cancelled} cancelled, {self.completed} completed ({self.late} after a late "
            f"cancel), {self.checked} checked"
        )
        if not self.findings:
            return f"{line}; no violations"
        counted = ", ".join(f"{name} ×{n}" for name, n in self.counts().items())
        return f"{line}; {len(self.findings)} violations: {counted}"

    def raise_for_violations(self, per_invariant: int = 5) -> None:
        """Raise AssertionError naming each violated invariant, with its first few cases."""
        if not self.findings:
            return
        lines = [f"cancellation sweep found violations — {self.summary()}"]
        for invariant, count in self.counts().items():
            cases = [f for f in self.findings if f.invariant == invariant][:per_invariant]
            lines.extend(str(case) for case in cases)
            if count > len(cases):
                lines.append(f"… and {count - len(cases)} more {invariant}")
        raise AssertionError("\n".join(lines))
