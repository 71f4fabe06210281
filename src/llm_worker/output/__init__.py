"""Structured output: ``worker.run(input, output_type=MyModel)`` → ``result.output_value``.

The policy lives here, in one place: the schema and (partial) validation of an output type
(`_schema`), the provider-neutral request option (`OutputSpec`, `_spec`) and what one run decides
from its turns (`RunOutput`, `_policy`). The worker only calls it; providers only translate
`OutputSpec` into their request (`HTTPModel.output_options`).
"""

from ._policy import RunOutput, Verdict
from ._schema import OutputInvalid, OutputSchema, json_text, output_schema, partial_twin
from ._spec import FINAL_ANSWER_TOOL, OutputMode, OutputSpec

__all__ = [
    "FINAL_ANSWER_TOOL",
    "OutputInvalid",
    "OutputMode",
    "OutputSchema",
    "OutputSpec",
    "RunOutput",
    "Verdict",
    "json_text",
    "output_schema",
    "partial_twin",
]
