"""Why something ended, as a value: an interrupt, a failure, or a composition of those.

Invariants:
* A `Cause` is immutable and hashable by identity; it never holds a running task or thread, only
  names (``origin``) and, for failures, the exception object itself.
* ``kind`` of a composition is the kind of its first part: the first cause is why it ended, the
  parts after it happened on the way (sequential) or beside it (parallel).
* ``Cause.sequential``/``Cause.parallel`` flatten nested compositions of the same tag and drop
  empty causes, so ``str()`` stays one short line and ``render_tree()`` stays shallow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

InterruptKind = Literal[
    "explicit",  # someone called cancel(): a Stop button, a worker.cancel(), a token.cancel()
    "deadline",  # a run timeout or a token deadline passed
    "superseded",  # newer input replaced the running computation
    "parent",  # a parent token was cancelled
    "keyboard_interrupt",  # Ctrl-C
    "external",  # the awaiting task itself was cancelled by the async framework
    "aborted",  # a hook decided to abort the run
]
CauseTag = Literal["interrupt", "failure", "sequential", "parallel", "empty"]

INTERRUPT_KINDS: frozenset[str] = frozenset(InterruptKind.__args__)  # type: ignore[attr-defined]


@dataclass(frozen=True, eq=False)
class Cause:
    """Why a run, a task or a group of concurrent tasks ended.

    Build one with the constructors, never directly: ``Cause.interrupt(kind, reason, origin)``,
    ``Cause.failure(exc)``, ``Cause.sequential(a, b)`` (b happened after a, e.g. a clean-up that
    failed while handling a), ``Cause.parallel(a, b)`` (a and b happened side by side, e.g. two
    tools that failed together), ``Cause.empty()``.
    """

    tag: CauseTag
    interrupt_kind: InterruptKind | None = None
    reason: str | None = None
    origin: str | None = None
    error: BaseException | None = None
    parts: tuple[Cause, ...] = field(default=())

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def interrupt(
        cls, kind: InterruptKind = "explicit", reason: str | None = None, origin: str | None = None
    ) -> Cause:
        """An interruption: something outside asked this to stop (``kind`` says what)."""
        if kind not in INTERRUPT_KINDS:
            raise ValueError(f"unknown interrupt kind {kind!r}; expected one of {_kinds()}")
        return cls("interrupt", interrupt_kind=kind, reason=reason, origin=origin)

    @classmethod
    def failure(cls, error: BaseException, origin: str | None = None) -> Cause:
        """A failure: the work itself raised ``error``."""
        return cls("failure", error=error, origin=origin, reason=_describe(error))

    @classmethod
    def empty(cls) -> Cause:
        """Nothing went wrong; the neutral element of both compositions."""
        return _EMPTY

    @classmethod
    def sequential(cls, *causes: Cause | None) -> Cause:
        """``causes`` happened one after the other (the first is why it ended)."""
        return cls._compose("sequential", causes)

    @classmethod
    def parallel(cls, *causes: Cause | None) -> Cause:
        """``causes`` happened side by side, in concurrent tasks."""
        return cls._compose("parallel", causes)

    @classmethod
    def _compose(
        cls, tag: Literal["sequential", "parallel"], causes: tuple[Cause | None, ...]
    ) -> Cause:
        flat: list[Cause] = []
        for cause in causes:
            if cause is None or cause.tag == "empty":
                continue
            flat.extend(cause.parts if cause.tag == tag else (cause,))
        if not flat:
            return _EMPTY
        if len(flat) == 1:
            return flat[0]
        return cls(tag, parts=tuple(flat))

    # -- queries ----------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """The interrupt kind, ``"failure"`` or ``"empty"``; a composition has its first part's."""
        if self.tag == "interrupt":
            assert self.interrupt_kind is not None
            return self.interrupt_kind
        if self.tag in ("sequential", "parallel"):
            return self.parts[0].kind
        return self.tag

    @property
    def is_interrupt(self) -> bool:
        """True when the first (primary) cause is an interruption rather than a failure."""
        return self.kind in INTERRUPT_KINDS

    def leaves(self) -> Iterator[Cause]:
        """Every interrupt and failure in this cause, depth first, in order."""
        if self.tag in ("sequential", "parallel"):
            for part in self.parts:
                yield from part.leaves()
        elif self.tag != "empty":
            yield self

    def failures(self) -> list[BaseException]:
        """The exceptions of every failure in this cause, in order."""
        return [leaf.error for leaf in self.leaves() if leaf.error is not None]

    def interrupts(self) -> list[Cause]:
        """Every interruption in this cause, in order."""
        return [leaf for leaf in self.leaves() if leaf.tag == "interrupt"]

    # -- rendering --------------------------------------------------------------------------

    def __str__(self) -> str:
        if self.tag == "interrupt":
            text = f"interrupted ({self.kind})"
            if self.reason:
                text += f": {self.reason}"
            if self.origin:
                text += f" [{self.origin}]"
            return text
        if self.tag == "failure":
            text = f"failed: {self.reason}"
            return text + (f" [{self.origin}]" if self.origin else "")
        if self.tag == "sequential":
            return "; then ".join(_nested(part) for part in self.parts)
        if self.tag == "parallel":
            return " | ".join(_nested(part) for part in self.parts)
        return "no cause"

    def __repr__(self) -> str:
        return f"Cause<{self}>"

    def render_tree(self) -> str:
        """A multi-line tree, one leaf per line, for logs and error reports."""
        lines: list[str] = []
        self._render(lines, prefix="", is_last=True, is_root=True)
        return "\n".join(lines)

    def _render(self, lines: list[str], prefix: str, is_last: bool, is_root: bool) -> None:
        branch = "" if is_root else ("└─ " if is_last else "├─ ")
        label = self.tag if self.tag in ("sequential", "parallel") else str(self)
        lines.append(f"{prefix}{branch}{label}")
        child_prefix = prefix if is_root else prefix + ("   " if is_last else "│  ")
        for i, part in enumerate(self.parts):
            part._render(lines, child_prefix, is_last=i == len(self.parts) - 1, is_root=False)


_EMPTY = Cause("empty")


def _nested(cause: Cause) -> str:
    return f"({cause})" if cause.tag in ("sequential", "parallel") else str(cause)


def _describe(error: BaseException) -> str:
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _kinds() -> str:
    return ", ".join(sorted(INTERRUPT_KINDS))
