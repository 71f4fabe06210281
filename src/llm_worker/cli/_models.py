"""``llm-worker models``: the model specs accepted, the options ``-o`` takes, the keys that are
set. Reads the environment only: it names each key's variable and whether it is set, never a
value, and imports no provider.
"""

from __future__ import annotations

import argparse
import os
import sys

from ._common import EXIT_OK

# (spec, what it is, its key variables (the first set one is used), its endpoint variable)
_PROVIDERS: tuple[tuple[str, str, tuple[str, ...], str | None], ...] = (
    ("offline", "built in: no key, no network (offline:reasoning also thinks aloud)", (), None),
    (
        "openai:<model>",
        "OpenAI Chat Completions, or any compatible server",
        ("OPENAI_API_KEY",),
        "OPENAI_BASE_URL",
    ),
    ("openai-responses:<model>", "OpenAI Responses API", ("OPENAI_API_KEY",), "OPENAI_BASE_URL"),
    ("anthropic:<model>", "Anthropic Messages API", ("ANTHROPIC_API_KEY",), "ANTHROPIC_BASE_URL"),
    (
        "gemini:<model>",
        "Google Gemini API",
        ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
        "GOOGLE_GEMINI_BASE_URL",
    ),
    ("ollama:<model>", "a local Ollama (http://localhost:11434/v1, no key)", (), None),
)


def cmd_models(args: argparse.Namespace) -> int:
    lines = ["model specs (-m SPEC, or LLM_WORKER_MODEL):"]
    for spec, what, keys, endpoint in _PROVIDERS:
        if not keys:
            key = "no key needed"
        else:
            found = [name for name in keys if os.environ.get(name)]
            key = f"{found[0]} set" if found else f"{' or '.join(keys)} not set"
            if endpoint and os.environ.get(endpoint):
                key += f", {endpoint} set"
        lines.append(f"  {spec:<26} {what} ({key})")
    lines += [
        "",
        "with --base-url URL an openai spec talks to that server; no key is needed if none is set",
        "",
        "model options (-o NAME VALUE, kept in the session):",
        "  temperature FLOAT, max_tokens INT   every model",
        "  any other NAME (reasoning_effort, top_p, seed, ...)   sent as is to openai-compatible "
        "servers",
        "",
        f"default model: {os.environ.get('LLM_WORKER_MODEL') or 'offline'}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK
