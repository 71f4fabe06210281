"""`OutputSpec`: what a request asks of the model's final answer, provider-neutral.

Invariants: a spec is an immutable value built once per run (`OutputSchema.spec`); providers only
translate it into their request option (`HTTPModel.output_options`), never decide the policy.
``mode`` says how the answer comes back: ``native`` as the response's text (the provider
constrains it to ``schema``), ``tool`` as the arguments of a call to ``tool_name``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

OutputMode = Literal["native", "tool"]

#: The name of the final-answer tool, in ``tool`` mode.
FINAL_ANSWER_TOOL = "final_answer"


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """The structured answer a request asks for.

    ``schema`` is a JSON schema of an ``object`` (a non-object output type is wrapped as
    ``{"value": ...}``); ``strict`` is True when it meets OpenAI's strict mode (every property
    required, no extra properties), so a provider may enforce it exactly.
    """

    name: str
    schema: dict[str, Any] = field(hash=False)
    strict: bool = False
    mode: OutputMode = "native"
    description: str = ""
    tool_name: str = FINAL_ANSWER_TOOL
