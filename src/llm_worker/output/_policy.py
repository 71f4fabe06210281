"""`RunOutput`: the structured-output policy of one run — the worker only calls it.

What a request asks (`spec`, and in ``tool`` mode the final-answer tool in `tool_specs`), what a
stream shows as it grows (`watch` → `OutputDelta`), what a finished turn decides (`judge`: the
answer is accepted, or the model is told why not and asked again, a bounded number of times),
and what an interrupted run keeps (`partial`).

Invariants:
* Nothing here awaits or touches the history: `judge` returns the items to commit and the calls
  still to run; the worker commits them.
* A final-answer call always gets a result (accepted, or the validation error the model sees),
  and calls beside an accepted one get a ``skipped`` result: the history stays valid.
* Watching costs a list append per chunk; the JSON so far is parsed again only once it grew by
  an eighth since the last parse (`_Growing`), so a streamed answer of n bytes costs O(n) parsing
  in all, not O(n²). Only runs someone streams (`Run.observed`) are watched at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..events import OutputDelta, StreamEvent, TextDelta, ToolCallDelta, ToolCallStart
from ..items import AssistantMessage, Item, Note, ToolCall, ToolResult
from ..tools import ToolSpec
from ._schema import OutputInvalid, OutputSchema

ACCEPTED = "Final answer received."
NOT_RUN = "Not run: the final answer was given in the same response."


@dataclass
class Verdict:
    """What one turn's answer means: ``done`` (accepted), the items to commit now, the calls
    still to run, and ``failure`` when the retries are spent (the run ends with it)."""

    done: bool = False
    commit: list[Item] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    failure: str | None = None


class _Growing:
    """The JSON of one answer as it streams, parsed again only after it grew by an eighth."""

    __slots__ = ("chunks", "due", "size")

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.size = 0
        self.due = 1

    def add(self, text: str) -> str | None:
        """Append ``text``; the whole text when it is due to be parsed again, else None."""
        self.chunks.append(text)
        self.size += len(text)
        if self.size < self.due:
            return None
        self.due = self.size + max(1, self.size // 8)
        return "".join(self.chunks)


class RunOutput:
    """One run's structured output (see the module); ``value`` is set once an answer passed."""

    __slots__ = (
        "_growing",
        "_shown",
        "_tool_index",
        "failures",
        "retries",
        "schema",
        "spec",
        "value",
    )

    def __init__(self, schema: OutputSchema[Any], *, native: bool, retries: int) -> None:
        self.schema = schema
        self.spec = schema.spec("native" if native else "tool")
        self.retries = retries
        self.failures = 0
        self.value: Any = None
        self._growing = _Growing()
        self._tool_index: int | None = None
        self._shown: Any = None

    @property
    def tool_name(self) -> str | None:
        return self.spec.tool_name if self.spec.mode == "tool" else None

    def tool_specs(self) -> tuple[ToolSpec, ...]:
        """The final-answer tool, in ``tool`` mode (nothing in ``native`` mode)."""
        if self.spec.mode != "tool":
            return ()
        description = (
            "Give your final answer by calling this tool with arguments that match its schema."
        )
        if self.spec.description:
            description = f"{description} {self.spec.description}"
        return (
            ToolSpec(
                name=self.spec.tool_name,
                description=description,
                parameters=self.spec.schema,
                strict=self.spec.strict,
            ),
        )

    # -- the stream ----------------------------------------------------------------------------

    def start_turn(self) -> None:
        self._growing = _Growing()
        self._tool_index = None
        self._shown = None

    def watch(self, event: StreamEvent) -> OutputDelta | None:
        """The partial answer after ``event``, when it is due for a new parse (else None)."""
        if self.spec.mode == "native":
            if type(event) is not TextDelta:
                return None
            text = self._growing.add(event.text)
        elif type(event) is ToolCallDelta:
            if event.index != self._tool_index:
                return None
            text = self._growing.add(event.arguments)
        else:
            if type(event) is ToolCallStart and event.name == self.spec.tool_name:
                self._tool_index = event.index
            return None
        if text is None:
            return None
        value = self.schema.partial(text)
        if value is None or value == self._shown:
            return None  # nothing validated yet, or nothing new (a string still open, say)
        self._shown = value
        return OutputDelta(value=value)

    # -- a finished turn -------------------------------------------------------------------------

    def judge(self, items: Sequence[Item]) -> Verdict:
        """What the turn that produced ``items`` means for the run (see `Verdict`)."""
        calls = [item for item in items if isinstance(item, ToolCall)]
        message = next((item for item in items if isinstance(item, AssistantMessage)), None)
        if self.spec.mode == "tool":
            finals = [call for call in calls if call.name == self.spec.tool_name]
            others = [call for call in calls if call.name != self.spec.tool_name]
            if finals:
                return self._final_call(finals, others)
        if calls:
            return Verdict(calls=calls)
        text = message.text if message is not None else ""
        try:
            self.value = self.schema.validate(text)
        except OutputInvalid as exc:
            if self.spec.mode == "tool":
                ask = (
                    f"Give your final answer by calling the {self.spec.tool_name} tool with "
                    "arguments that match its schema."
                )
            else:
                ask = (
                    f"Your answer did not match the required output schema ({exc}). Answer "
                    "again with only a JSON value that matches the schema."
                )
            return self._retry([Note(kind="info", text=ask)], str(exc))
        return Verdict(done=True)

    def _final_call(self, finals: list[ToolCall], others: list[ToolCall]) -> Verdict:
        final = finals[0]
        try:
            if not final.complete:
                raise OutputInvalid("the arguments were cut off before they finished")
            self.value = self.schema.validate(final.raw_arguments)
        except OutputInvalid as exc:
            said = f"The final answer did not match the schema: {exc}. Call the tool again."
            results: list[Item] = [_result(call, said, "error") for call in finals]
            verdict = self._retry(results, str(exc))
            verdict.calls = others
            return verdict
        accepted: list[Item] = [_result(final, ACCEPTED, "ok")]
        accepted += [_result(call, NOT_RUN, "skipped") for call in (*finals[1:], *others)]
        return Verdict(done=True, commit=accepted)

    def _retry(self, commit: list[Item], problem: str) -> Verdict:
        self.failures += 1
        if self.failures > self.retries:
            return Verdict(
                commit=commit,
                failure=(
                    f"the model's answer did not match {self.schema.name} after "
                    f"{self.failures} attempts: {problem}"
                ),
            )
        return Verdict(commit=commit)

    # -- an interrupted run -----------------------------------------------------------------------

    def partial(self, items: Sequence[Item]) -> Any:
        """The answer validated so far among ``items`` (a run's, interrupted), or None."""
        for item in reversed(items):
            if self.spec.mode == "tool" and isinstance(item, ToolCall):
                if item.name == self.spec.tool_name:
                    return self.schema.partial(item.raw_arguments)
            elif isinstance(item, AssistantMessage) and item.text:
                return self.schema.partial(item.text)
        return None


def _result(call: ToolCall, content: str, status: Any) -> ToolResult:
    return ToolResult(call_id=call.call_id, name=call.name, content=content, status=status)
