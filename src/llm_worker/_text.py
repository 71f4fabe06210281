"""Text that can always be encoded: made valid once, where it enters the history.

Invariants:
* `valid_text` returns its argument unchanged when it is valid Unicode (the common case costs one
  ``isascii`` or one encode), and otherwise joins split UTF-16 surrogate pairs and replaces lone
  surrogates with U+FFFD, so the result always encodes to UTF-8 (JSON bodies, SQLite, terminals).
* `check_json_value` walks a parsed JSON value without recursion (any depth is safe to inspect)
  and repairs its strings in place.
"""

from __future__ import annotations

from typing import Any

MAX_JSON_DEPTH = 64  # deeper tool arguments are refused: no tool schema nests like that


def valid_text(text: str) -> str:
    """``text`` with lone surrogates replaced (and split pairs joined); unchanged if valid."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def check_json_value(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Repair the strings of a parsed JSON value in place; return why it is refused, or None.

    A value nested deeper than ``max_depth`` is refused: it could not be serialised again (pydantic
    and the JSON encoders recurse) and no tool needs it.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return f"arguments nest deeper than {max_depth} levels"
        if isinstance(node, dict):
            for key, child in list(node.items()):
                fixed_key = valid_text(key)
                if fixed_key is not key:
                    del node[key]
                if isinstance(child, str):
                    node[fixed_key] = valid_text(child)
                else:
                    node[fixed_key] = child
                    if isinstance(child, dict | list):
                        stack.append((child, depth + 1))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                if isinstance(child, str):
                    node[index] = valid_text(child)
                elif isinstance(child, dict | list):
                    stack.append((child, depth + 1))
    return None
