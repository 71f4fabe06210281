"""The session's token total says when some answers did not report their usage."""

from __future__ import annotations

from llm_worker.cli._views import _session_tokens
from llm_worker.items import AssistantMessage, TextPart, Usage, UserMessage


def _answer(usage: Usage | None) -> AssistantMessage:
    return AssistantMessage(parts=(TextPart(text="ok"),), usage=usage)


def test_a_total_is_complete_only_when_every_answer_reported_both_counts() -> None:
    known = _answer(Usage(input_tokens=3, output_tokens=4))
    assert _session_tokens([UserMessage(text="hi"), known, known]) == (14, True)
    assert _session_tokens([known, _answer(None)]) == (7, False)
    assert _session_tokens([known, _answer(Usage(output_tokens=2))]) == (9, False)
    assert _session_tokens([_answer(None)]) == (0, False)
