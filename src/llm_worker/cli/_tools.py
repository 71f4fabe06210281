"""``--tools``: from the words a person types to the tools a worker gets.

Invariants:
* A tools setting is a list of words, each ``demo``, ``module:attribute`` (imported; the
  attribute is a `Tool`, a plain function, or a list/tuple of them) or a path ending in ``.py``
  (the file is run as a module; every `Tool` at its top level is taken, in order). ``none``
  alone means no tools.
* A word that cannot be loaded is a usage `CLIError` naming the word and why, raised before the
  session is opened; code in the user's file runs only then, in the main thread.
* The setting is stored in the session as a JSON list of the words, never the code; a path is
  stored absolute, so the session works from another directory. Old sessions stored one word
  (``"demo"``/``"none"``), which is still read.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from ._common import EXIT_USAGE, CLIError

if TYPE_CHECKING:
    from ..tools import Tool


def normalise(words: list[str]) -> list[str]:
    """The flags' words as stored: split on commas, paths made absolute, 'none' clears."""
    result: list[str] = []
    for given in words:
        for word in (part.strip() for part in given.split(",")):
            if not word:
                continue
            if word == "none":
                result = []
            elif word.endswith(".py"):
                result.append(os.path.abspath(os.path.expanduser(word)))
            else:
                result.append(word)
    return result


def dump(words: list[str]) -> str:
    """As stored: one toolset name as itself (what older versions and the web service read),
    anything else as a JSON list."""
    if not words:
        return "none"
    if words == ["demo"]:
        return "demo"
    return json.dumps(words)


def load_setting(stored: str | None) -> list[str]:
    """A stored setting as words: a JSON list, or an old single toolset name."""
    if not stored:
        return []
    if stored.startswith("["):
        try:
            words = json.loads(stored)
        except ValueError:
            raise CLIError(
                "the session's tools setting is unreadable; give --tools again"
            ) from None
        return [str(word) for word in words]
    return [] if stored == "none" else [stored]


def load_tools(words: list[str], *, stored_in: str | None = None) -> list[Tool[..., Any]]:
    """The tools the words name, in order; raises a usage `CLIError` for one that cannot be
    (``stored_in``: the words are session ``stored_in``'s, not the flags')."""
    tools: list[Tool[..., Any]] = []
    for word in words:
        if stored_in is not None and word != "demo" and ":" not in word and ".py" not in word:
            raise CLIError(  # stored by another version, or by a program using the store
                f"session {stored_in!r} uses the toolset {word!r}, which this llm-worker does "
                "not know; choose tools with --tools"
            )
        tools.extend(_load(word))
    names = [tool.name for tool in tools]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise CLIError(f"--tools gives two tools named {', '.join(twice)}", EXIT_USAGE)
    return tools


def _load(word: str) -> list[Tool[..., Any]]:
    if word == "demo":
        from .._demo_tools import DEMO_TOOLS

        return list(DEMO_TOOLS)
    if word.endswith(".py"):
        return _from_file(word)
    module_name, colon, attribute = word.partition(":")
    if not colon or not module_name or not attribute:
        raise CLIError(
            f"--tools {word!r}: expected 'demo', 'module:attribute' or 'path/to/file.py'",
            EXIT_USAGE,
        )
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like 'python -m': the current directory's modules
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise CLIError(
            f"--tools {word!r}: cannot import {module_name}: {exc}", EXIT_USAGE
        ) from None
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise CLIError(
            f"--tools {word!r}: {module_name} has no {attribute!r}", EXIT_USAGE
        ) from None
    return _as_tools(value, word)


def _from_file(path: str) -> list[Tool[..., Any]]:
    from ..tools import Tool

    if not os.path.isfile(path):
        raise CLIError(f"--tools {path!r}: no such file", EXIT_USAGE)
    name = "llm_worker_user_tools_" + str(abs(hash(path)))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"--tools {path!r}: not a Python file", EXIT_USAGE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise CLIError(f"--tools {path!r}: running it failed: {exc}", EXIT_USAGE) from None
    found = [value for value in vars(module).values() if isinstance(value, Tool)]
    if not found:
        raise CLIError(
            f"--tools {path!r} defines no tools (decorate functions with @llm_worker.tool)",
            EXIT_USAGE,
        )
    return found


def _as_tools(value: object, word: str) -> list[Tool[..., Any]]:
    from ..tools import Tool, tool

    values = list(value) if isinstance(value, list | tuple) else [value]
    tools: list[Tool[..., Any]] = []
    for each in values:
        if isinstance(each, Tool):
            tools.append(each)
        elif callable(each):
            try:
                tools.append(tool(each))
            except Exception as exc:
                raise CLIError(
                    f"--tools {word!r}: not usable as a tool: {exc}", EXIT_USAGE
                ) from None
        else:
            raise CLIError(f"--tools {word!r}: not a tool or a function", EXIT_USAGE)
    return tools
