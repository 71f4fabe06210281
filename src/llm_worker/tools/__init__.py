"""Tools: plain typed functions that a model can call, with schema and validation from signatures.

One job per module: `_tool` (Tool, @tool, Toolset, binding a call, rendering its result),
`_context` (ToolContext), `_signature` (signature → arguments model, validation and its
messages), `_schema` (JSON schema, strict mode, ToolSpec), `_docstring` (descriptions from
docstrings). What becomes of a call that ignores its token is `ConcurrentMap`'s policy alone.
"""

from ._context import ToolContext
from ._schema import ToolSpec
from ._signature import ToolArgumentsError
from ._tool import Tool, Toolset, tool

__all__ = ["Tool", "ToolArgumentsError", "ToolContext", "ToolSpec", "Toolset", "tool"]
