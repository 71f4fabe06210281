"""Docstring parsing: a tool's description and its parameters' descriptions.

Invariants:
* `parse_docstring` never raises: Google (``Args:``), reST (``:param x:``) and numpy
  (``Parameters`` + dashes) sections are understood; anything else stays in the description or is
  ignored.
* The description is the text before the first section; no section's text leaks into it.
"""

from __future__ import annotations

import inspect
import re
import textwrap

__all__ = ["parse_docstring"]

_PARAM_SECTIONS = frozenset(
    {
        *("args", "arguments", "parameters", "params"),
        *("keyword args", "keyword arguments", "other parameters"),
    }
)
_OTHER_SECTIONS = frozenset(
    {
        *("returns", "return", "yields", "yield", "raises", "raise", "exceptions", "examples"),
        *("example", "note", "notes", "warning", "warnings", "see also", "attributes", "todo"),
        *("references",),
    }
)
_REST_FIELD = re.compile(r"^:\w[^:]*:")
_REST_PARAM = re.compile(
    r"^:(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*\s)?\**(\w+)\s*:(.*)$"
)
_GOOGLE_ENTRY = re.compile(r"^\**(\w+)\s*(?:\([^)]*\))?\s*:(.*)$")
_NUMPY_ENTRY = re.compile(r"^\**(\w+(?:\s*,\s*\**\w+)*)\s*(?::.*)?$")
_DASHES = re.compile(r"^-{3,}$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description (text before any section) and per-parameter descriptions of a docstring.

    Understands Google (``Args:``), reST (``:param x:``) and numpy (``Parameters`` + dashes)
    styles; anything it does not understand stays in the description or is ignored.
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    params: dict[str, str] = {}
    description_end = len(lines)
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        indent = _indent(lines[i])
        header = stripped[:-1].strip().lower() if stripped.endswith(":") else None
        if header in _PARAM_SECTIONS or header in _OTHER_SECTIONS:  # Google
            description_end = min(description_end, i)
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
                j += 1
            if header in _PARAM_SECTIONS:
                params.update(_google_entries(lines[i + 1 : j]))
            i = j
            continue
        if i + 1 < len(lines) and _DASHES.match(lines[i + 1].strip()) and stripped:  # numpy
            description_end = min(description_end, i)
            j = i + 2
            while j < len(lines) and not (
                j + 1 < len(lines) and _DASHES.match(lines[j + 1].strip()) and lines[j].strip()
            ):
                j += 1
            if stripped.lower() in _PARAM_SECTIONS:
                params.update(_numpy_entries(lines[i + 2 : j]))
            i = j
            continue
        if _REST_FIELD.match(stripped):  # reST
            description_end = min(description_end, i)
            j = i + 1
            while (
                j < len(lines)
                and lines[j].strip()
                and (_indent(lines[j]) > indent or not _REST_FIELD.match(lines[j].strip()))
            ):
                j += 1
            match = _REST_PARAM.match(stripped)
            if match:
                text = " ".join(
                    [match.group(2).strip(), *(line.strip() for line in lines[i + 1 : j])]
                )
                params[match.group(1)] = text.strip()
            i = j
            continue
        i += 1
    description = "\n".join(lines[:description_end]).strip()
    return description, {k: v for k, v in params.items() if v}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _google_entries(block: list[str]) -> dict[str, str]:
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in textwrap.dedent("\n".join(block)).splitlines():
        if not line.strip():
            continue
        match = _GOOGLE_ENTRY.match(line) if not line[0].isspace() else None
        if match:
            current = entries.setdefault(match.group(1), [])
            current.append(match.group(2).strip())
        elif current is not None:
            current.append(line.strip())
    return {name: " ".join(part for part in parts if part) for name, parts in entries.items()}


def _numpy_entries(block: list[str]) -> dict[str, str]:
    entries: dict[str, list[str]] = {}
    current: list[list[str]] = []
    for line in textwrap.dedent("\n".join(block)).splitlines():
        if not line.strip():
            continue
        match = _NUMPY_ENTRY.match(line) if not line[0].isspace() else None
        if match:
            names = [n.strip().lstrip("*") for n in match.group(1).split(",")]
            current = [entries.setdefault(n, []) for n in names]
        else:
            for parts in current:
                parts.append(line.strip())
    return {name: " ".join(parts) for name, parts in entries.items()}
