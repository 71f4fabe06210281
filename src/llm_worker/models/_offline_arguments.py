"""Tool calls of the offline model: which tools a prompt names, and arguments from their schemas.

A tool takes values from its segment of the prompt (the text between its first mention and the
next mention of any tool), then from the text before the first mention: numbers, quoted phrases,
enum choices it names, and the last few meaningful words.

Invariants: the arguments are a pure function of the prompt and the schema (no clock, no
randomness); every required property gets a value, an optional one only when the prompt gives
one; a cyclic ``$ref`` is followed a bounded number of times.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..tools import ToolSpec

_QUOTE_RE = re.compile(r"\"([^\"]+)\"|“([^”]+)”|(?<!\w)'([^']+)'(?!\w)")
_NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\w)")
_TOKEN_RE = re.compile(r"[\w'’-]+|[^\w\s]")
# Words that never make a value: "weather in Paris please" gives "Paris".
_STOPWORD_TEXT = """a about after again all also am an and any are as at be before but by call
    calling can could do does for from get give go has have how i i'd i'll i'm in into is it
    it's its let let's me my now of on or our please run say see show so some than that the them
    then these this those to tool tools try up us use using want was we what what's when where
    which who why will with would you your"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass
class _Pool:
    """Values the prompt offers one tool call, used up in order; ``text`` is searched for enums."""

    numbers: list[str]
    quotes: list[str]
    words: str
    text: str

    def number(self) -> str | None:
        return self.numbers.pop(0) if self.numbers else None

    def quote(self) -> str | None:
        return self.quotes.pop(0) if self.quotes else None


def _mention_re(name: str) -> re.Pattern[str] | None:
    parts = [re.escape(part) for part in name.split("_") if part]
    if not parts:
        return None
    return re.compile(r"(?<!\w)" + r"[_\s]+".join(parts) + r"(?!\w)", re.IGNORECASE)


def named_tools(prompt: str, tools: Sequence[ToolSpec]) -> list[tuple[ToolSpec, _Pool]]:
    """The tools ``prompt`` names, in the order it first names them, each with its values.

    A tool takes values from its *segment* — the text between its first mention and the next
    mention of any tool — then from the text before the first mention, never from another tool's
    segment: "get_weather for Paris and slow_count to 5".
    """
    firsts: list[tuple[int, int, ToolSpec]] = []
    spans: list[tuple[int, int]] = []
    for spec in tools:
        pattern = _mention_re(spec.name)
        found = list(pattern.finditer(prompt)) if pattern else []
        if found:
            firsts.append((found[0].start(), found[0].end(), spec))
            spans.extend(match.span() for match in found)
    if not firsts:
        return []
    firsts.sort(key=lambda first: first[0])
    quoted = list(_QUOTE_RE.finditer(prompt))
    quotes = [(m.start(), next(g for g in m.groups() if g)) for m in quoted]
    # Blank out tool names and quoted phrases (keeping offsets) so they yield no numbers or words.
    blanked = list(prompt)
    for start, end in [*spans, *(m.span() for m in quoted)]:
        blanked[start:end] = "," + " " * (end - start - 1)
    text = "".join(blanked)
    numbers = [(m.start(), m.group()) for m in _NUMBER_RE.finditer(text)]
    starts = sorted(start for start, _ in spans)
    preamble = firsts[0][0]
    named = []
    for _, end, spec in firsts:
        stop = next((start for start in starts if start >= end), len(prompt))
        choices = _enum_words(spec.parameters)
        pool = _Pool(
            numbers=_in_ranges(numbers, (end, stop), (0, preamble)),
            quotes=_in_ranges(quotes, (end, stop), (0, preamble)),
            words=_last_words(text[end:stop], choices)
            or _last_words(text[:preamble], choices)
            or _last_words(text, choices)
            or "example",
            text=text[end:stop] + " " + text[:preamble],
        )
        named.append((spec, pool))
    return named


def _in_ranges(found: Sequence[tuple[int, str]], *ranges: tuple[int, int]) -> list[str]:
    """The values found in each range in turn, in prompt order within a range."""
    return [value for start, stop in ranges for pos, value in found if start <= pos < stop]


def _enum_words(schema: Any) -> frozenset[str]:
    """Every string enum value anywhere in ``schema``: choices, not free words."""
    if isinstance(schema, Mapping):
        own = schema.get("enum")
        words = {v.lower() for v in own if isinstance(v, str)} if isinstance(own, list) else set()
        return frozenset(words).union(*(_enum_words(v) for v in schema.values()))
    if isinstance(schema, list):
        return frozenset().union(*(_enum_words(v) for v in schema))
    return frozenset()


def _last_words(text: str, exclude: frozenset[str] = frozenset()) -> str:
    """The last run of up to three meaningful words: no stopwords, numbers or punctuation."""
    runs: list[list[str]] = [[]]
    for token in _TOKEN_RE.findall(text):
        word = token.strip("'’-")
        lowered = word.lower().replace("’", "'")
        if (
            not word
            or not word[0].isalnum()
            or lowered in _STOPWORDS
            or lowered in exclude
            or _NUMBER_RE.fullmatch(word)
        ):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(word)
    meaningful = [run for run in runs if run]
    return " ".join(meaningful[-1][-3:]) if meaningful else ""


_MISSING: Any = object()


def tool_arguments(schema: Mapping[str, Any], pool: _Pool) -> dict[str, Any]:
    value = _object(schema, pool, schema)
    return value if isinstance(value, dict) else {}


def _object(schema: Mapping[str, Any], pool: _Pool, root: Mapping[str, Any]) -> dict[str, Any]:
    """Every required property, then optional ones the prompt gives a value for, in order."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = [name for name in schema.get("required") or () if isinstance(name, str)]
    values: dict[str, Any] = {}
    for name in required:
        values[name] = _value(properties.get(name, {}), pool, root, required=True)
    for name, prop in properties.items():
        if name not in values:
            value = _value(prop, pool, root, required=False)
            if value is not _MISSING:
                values[name] = value
    order = [*properties, *(name for name in required if name not in properties)]
    return {name: values[name] for name in order if name in values}


def _value(schema: Any, pool: _Pool, root: Mapping[str, Any], *, required: bool) -> Any:
    """A value for one property, or `_MISSING` for an optional one the prompt says nothing of."""
    schema, kind, nullable = _resolve(schema, root)
    default = schema.get("default", None if nullable else _MISSING)
    if "const" in schema:
        return schema["const"] if required else _MISSING
    choices = schema.get("enum")
    if isinstance(choices, list) and choices:
        named = _named_choice(choices, pool.text)
        if named is not _MISSING:
            return named
        if not required:
            return _MISSING
        return default if default is not _MISSING else choices[0]
    if kind in ("integer", "number"):
        raw = pool.number()
        if raw is None:
            if not required:
                return _MISSING
            return default if default is not _MISSING else _clamp(3, schema)
        number: float = float(raw)
        return _clamp(round(number) if kind == "integer" or "." not in raw else number, schema)
    if kind == "string":
        quoted = pool.quote()
        if quoted is not None:
            return quoted
        if not required:
            return _MISSING
        return pool.words
    if not required:
        return _MISSING
    if default is not _MISSING:
        return default
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return _object(schema, pool, root)
    if kind == "null":
        return None
    return pool.words


def _resolve(schema: Any, root: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None, bool]:
    """Follow ``$ref``, ``anyOf`` and ``oneOf`` to the first non-null schema.

    Returns it, its type name (None if it has none) and whether null was an option.
    """
    nullable = False
    for _ in range(16):  # bounds a cyclic $ref
        if not isinstance(schema, Mapping):
            return {}, None, nullable
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for key in ref[2:].split("/"):
                target = target.get(key, {}) if isinstance(target, Mapping) else {}
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            continue
        options = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(options, list) and options:
            nullable = nullable or any(_resolve(o, root)[1] == "null" for o in options)
            chosen = next((o for o in options if _resolve(o, root)[1] != "null"), options[0])
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            schema = {**chosen, **rest} if isinstance(chosen, Mapping) else rest
            continue
        kind = schema.get("type")
        if isinstance(kind, list):
            nullable = nullable or "null" in kind
            kind = next((k for k in kind if k != "null"), "null")
        return schema, kind if isinstance(kind, str) else None, nullable
    return {}, None, nullable


def _named_choice(choices: Sequence[Any], text: str) -> Any:
    """The string choice that ``text`` names first (its segment comes first), or `_MISSING`."""
    best, best_at = _MISSING, len(text)
    for choice in choices:
        if isinstance(choice, str) and choice:
            found = re.search(r"(?<!\w)" + re.escape(choice) + r"(?!\w)", text, re.IGNORECASE)
            if found and found.start() < best_at:
                best, best_at = choice, found.start()
    return best


def _clamp(value: float, schema: Mapping[str, Any]) -> float:
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(high, int | float) and value > high:
        value = high
    return value


def prompt_values(prompt: str) -> _Pool:
    """The values a whole prompt offers (numbers, quoted phrases, its last words), for an answer
    made up from a schema rather than for one named tool."""
    quoted = list(_QUOTE_RE.finditer(prompt))
    blanked = list(prompt)
    for match in quoted:
        start, end = match.span()
        blanked[start:end] = "," + " " * (end - start - 1)
    text = "".join(blanked)
    return _Pool(
        numbers=[m.group() for m in _NUMBER_RE.finditer(text)],
        quotes=[next(g for g in m.groups() if g) for m in quoted],
        words=_last_words(text) or "example",
        text=text,
    )
