"""The CLI's one sanitiser: whatever way a text is split into deltas, the output is the same."""

from __future__ import annotations

import json

import pytest

from llm_worker.cli._safe import REDACTED, StreamFilter, json_safe, visible

KEY = "sk-test-SPLIT-ANYWHERE-42"
TEXT = f"a\x1b]0;t\x07b\r\nc\rd\u202ee\x9bf key={KEY}! \ud800 tab\tend\r"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", KEY)


def streamed(*deltas: str) -> str:
    stream = StreamFilter()
    return "".join(stream.feed(delta) for delta in deltas) + stream.end()


def test_a_sequence_split_anywhere_across_two_deltas_is_shown_like_a_whole_one() -> None:
    whole = visible(TEXT)
    assert whole == (
        "a\\x1b]0;t\\x07b\nc\\rd\\u202ee\\x9bf key=" + REDACTED + "! \\ud800 tab\tend\\r"
    )
    for cut in range(len(TEXT) + 1):
        assert streamed(TEXT[:cut], TEXT[cut:]) == whole, cut


def test_one_character_deltas_are_shown_like_the_whole_text() -> None:
    assert streamed(*TEXT) == visible(TEXT)


def test_nothing_unsafe_is_ever_written_before_the_stream_ends() -> None:
    stream = StreamFilter()
    for char in TEXT:
        out = stream.feed(char)
        assert "\x1b" not in out
        assert "\r" not in out
        assert KEY[:3] not in out


def test_one_line_text_escapes_line_breaks_and_tabs() -> None:
    assert visible("a\nb\tc\r\nd", one_line=True) == "a\\nb\\tc\\nd"


def test_json_lines_parse_to_the_same_document_but_for_the_key() -> None:
    document = {"text": "x\x9by\u202ez\x7f" + KEY, "n": 1}
    line = json_safe(json.dumps(document, ensure_ascii=False))
    for unsafe in ("\x9b", "\u202e", "\x7f"):
        assert unsafe not in line
    assert json.loads(line) == {"text": "x\x9by\u202ez\x7f" + REDACTED, "n": 1}
