"""The chat's input: one message from the terminal, whether typed, pasted or written over lines.

Invariants:
* Runs in the main thread, with no turn running: a Ctrl-C is a `KeyboardInterrupt` out of
  `read_message`, Ctrl-D an `EOFError`, as ``input()`` has them.
* A pasted block is one message. readline's bracketed paste hands it over as one line holding
  its line breaks; without it, lines that were already waiting on the terminal when a line ended
  (a paste arrives at once, typing does not) are joined to it.
* In multi-line mode (``/multiline``) lines are gathered until one holding only ``.``; a first
  line starting with ``/`` is a chat command, as always.
"""

from __future__ import annotations

import select
import sys

END_OF_MESSAGE = "."


def _waiting(timeout: float) -> bool:
    """Whether more input is already waiting on stdin (a terminal)."""
    try:
        ready, _, _ = select.select([sys.stdin], [], [], timeout)
    except (OSError, ValueError):
        return False
    return bool(ready)


def read_message(prompt: str, *, multiline: bool, interactive: bool) -> str:
    """One message: a line, a pasted block, or (``multiline``) lines up to a lone ``.``."""
    first = input(prompt)
    if multiline and not first.startswith("/"):  # a command is still a command
        lines = [first]
        while first.strip() != END_OF_MESSAGE:
            try:
                first = input("… " if interactive else "")
            except EOFError:
                break
            lines.append(first)
        if lines and lines[-1].strip() == END_OF_MESSAGE:
            lines.pop()
        return "\n".join(lines)
    lines = [first]
    if interactive:
        while _waiting(0.02):
            try:
                lines.append(input(""))
            except EOFError:
                break
    return "\n".join(lines)
