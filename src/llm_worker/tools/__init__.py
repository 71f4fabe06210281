"""Tools: plain typed functions that a model can call, with schema and validation from signatures.

One job per module: `_tool` (Tool, @tool, ToolAnnotations, binding a call, rendering its result),
`_toolset` (Toolset: tools by unique name, and the tools its sources list), `_source`
(ToolSource: tools known only at run time, such as an MCP server's), `_output` (ToolOutput: an
answer with attachments or an error status), `_context` (ToolContext), `_signature` (signature →
arguments model, validation and its messages), `_schema` (JSON schema, strict mode, ToolSpec),
`_docstring` (descriptions from docstrings). What becomes of a call that ignores its token is
`ConcurrentMap`'s policy alone.
"""

from ._context import ToolContext
from ._output import ReportsPartial, ToolOutput
from ._schema import ToolSpec
from ._signature import ToolArgumentsError
from ._source import ToolSource
from ._tool import Tool, ToolAnnotations, tool
from ._toolset import Toolset

__all__ = [
    "ReportsPartial",
    "Tool",
    "ToolAnnotations",
    "ToolArgumentsError",
    "ToolContext",
    "ToolOutput",
    "ToolSource",
    "ToolSpec",
    "Toolset",
    "tool",
]
