"""`SSEDecoder`: the WHATWG event-stream rules, whatever the chunking, in linear time."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_worker.errors import ModelError
from llm_worker.models._sse import EventTooLarge, SSEDecoder

Event = tuple[str, str]

# Field values: any text without line breaks (and, for the event type, nothing the decoder trims).
_value = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]))
_type = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[Event]]:
    """A valid event stream and the events a conforming parser dispatches from it."""
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines: list[str] = []
    expected: list[Event] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.none() | _type)
        data = draw(st.lists(_value, max_size=3))
        noise = draw(st.lists(st.sampled_from([": keep-alive", "id: 7", "retry: 10", ":"])))
        if kind is not None:
            lines.append(f"event: {kind}")
        lines.extend(noise)
        for value in data:
            space = draw(st.sampled_from(["", " "]))
            # "data:x" and "data: x" mean the same; "data:  x" keeps one of the spaces.
            lines.append(
                f"data:{space}{value}" if space or not value.startswith(" ") else f"data: {value}"
            )
        lines.append("")
        if data:  # an event without data lines is never dispatched
            expected.append((kind or "", "\n".join(data)))
    body = "".join(line + newline for line in lines).encode()
    if draw(st.booleans()):
        body = b"\xef\xbb\xbf" + body
    return body, expected


def decode(chunks: list[bytes], limit: int | None = None) -> list[Event]:
    decoder = SSEDecoder(limit)
    events: list[Event] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.end())
    return events


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(body)) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(streams(), st.lists(st.integers(0, 2000), max_size=40))
def test_any_split_of_a_valid_stream_into_chunks_gives_the_same_events(
    stream: tuple[bytes, list[Event]], cuts: list[int]
) -> None:
    body, expected = stream
    assert decode([body]) == expected
    assert decode(split(body, cuts)) == expected
    assert decode([body[i : i + 1] for i in range(len(body))]) == expected


def test_a_leading_byte_order_mark_is_stripped_once_even_split_byte_by_byte() -> None:
    body = b"\xef\xbb\xbfdata: one\n\n\xef\xbb\xbfdata: two\n\n"
    assert decode([body[i : i + 1] for i in range(len(body))]) == [("", "one")]
    assert decode([b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n"]) == []  # a second BOM is no field


def test_an_event_with_no_data_is_not_dispatched_and_resets_its_type() -> None:
    assert decode([b"event: error\n\ndata: x\n\n"]) == [("", "x")]
    assert decode([b": only a comment\n\nid: 3\n\n"]) == []


def test_empty_data_lines_are_joined_as_the_standard_says() -> None:
    assert decode([b"data:\n\n"]) == [("", "")]
    assert decode([b"data\ndata: b\n\n"]) == [("", "\nb")]


def test_a_crlf_split_between_two_chunks_is_one_line_end() -> None:
    assert decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [("", "a\nb")]


def test_the_last_event_of_a_body_that_ends_without_its_blank_line_is_read() -> None:
    assert decode([b"data: last"]) == [("", "last")]


def test_invalid_utf8_is_replaced_not_an_error() -> None:
    assert decode([b"data: a\xffb\n\n"]) == [("", "a\ufffdb")]


def test_a_long_line_in_small_reads_costs_linear_time() -> None:
    """10 MB in 1 KB reads: the old parser copied the unfinished line on every read (63 s)."""
    line = b"data: " + b"x" * (10 * 1024 * 1024) + b"\n\n"
    chunks = [line[i : i + 1024] for i in range(0, len(line), 1024)]
    started = time.perf_counter()
    [(_, data)] = decode(chunks, limit=16 * 1024 * 1024)
    assert len(data) == 10 * 1024 * 1024
    assert time.perf_counter() - started < 10  # about 0.05 s; the quadratic parser took 63 s


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: " + b"x" * 2000],  # one line, never finished
        [b"data: " + b"x" * 500 for _ in range(5)],  # the same, in pieces
        [b"data: " + b"x" * 2000 + b"\n"],  # a whole line
        [b"data: " + b"x" * 600 + b"\n", b"data: " + b"x" * 600 + b"\n"],  # an event of lines
    ],
    ids=["unfinished-line", "line-in-pieces", "whole-line", "event-of-lines"],
)
def test_a_line_or_an_event_beyond_the_cap_is_a_final_typed_error(chunks: list[bytes]) -> None:
    with pytest.raises(EventTooLarge) as caught:
        decode(chunks, limit=1000)
    assert isinstance(caught.value, ModelError)
    assert not caught.value.retryable


def test_the_cap_counts_one_event_at_a_time() -> None:
    events = [b"data: " + b"x" * 900 + b"\n\n"] * 5
    assert len(decode(events, limit=1000)) == 5
