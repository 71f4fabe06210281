"""``llm-worker models``: the model specs accepted, the options ``-o`` takes, the keys that are
set. Reads the environment only: it names each key's variable and whether it is set, never a
value, and imports no provider.
"""

from __future__ import annotations

import argparse
import os
import sys

from ._common import EXIT_OK

_PROVIDERS = (
    ("offline", "built in: no key, no network (offline:reasoning also thinks aloud)", None),
    ("openai:<model>", "OpenAI Chat Completions, or any compatible server", "OPENAI"),
    ("openai-responses:<model>", "OpenAI Responses API", "OPENAI"),
    ("anthropic:<model>", "Anthropic Messages API", "ANTHROPIC"),
    ("ollama:<model>", "a local Ollama (http://localhost:11434/v1, no key)", None),
)


def cmd_models(args: argparse.Namespace) -> int:
    lines = ["model specs (-m SPEC, or LLM_WORKER_MODEL):"]
    for spec, what, prefix in _PROVIDERS:
        if prefix is None:
            key = "no key needed"
        else:
            state = "set" if os.environ.get(f"{prefix}_API_KEY") else "not set"
            key = f"{prefix}_API_KEY {state}"
            if os.environ.get(f"{prefix}_BASE_URL"):
                key += f", {prefix}_BASE_URL set"
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
