"""A listed MCP tool as a `Tool` the worker can offer and call.

Invariants:
* The input schema goes to the model exactly as the server listed it (a fresh copy each time);
  the server validates arguments, and its refusal comes back as an error result the model sees.
  Locally only "is it a JSON object" is checked.
* The name the model sees is the server's name, made valid for every provider (characters
  outside ``[A-Za-z0-9_-]`` become ``_``, at most 64); the call always uses the server's own
  name (``remote_name``). The toolset prefixes it with the server's name when it clashes.
* The server's annotations (read-only, destructive, idempotent, open-world, title) are kept as
  `ToolAnnotations` on the tool, for hooks.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import mcp_types as types

from ..cancel import CancelToken
from ..tools import Tool, ToolAnnotations, ToolArgumentsError, ToolSpec
from ..tools._tool import ProgressCallback
from ._call import MCPCall

if TYPE_CHECKING:
    from ._server import MCPServer

__all__ = ["MCPTool", "listed_tool"]

_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_-]")


class MCPTool(Tool[..., Any]):
    """A tool of an MCP server. Called through a worker (``bind``), never directly."""

    @property
    def sees_its_token(self) -> bool:
        """Always: a stop is relayed to the server, which may answer within the grace."""
        return True

    def __init__(self, server: MCPServer, listed: types.Tool) -> None:
        # Not Tool.__init__: there is no Python function whose signature would give the schema.
        self.server = server
        self.remote_name = listed.name
        self.name = (_NOT_IN_NAMES.sub("_", listed.name) or "tool")[:64]
        self.__name__ = self.name
        self.description = listed.description or listed.title or ""
        self.timeout = None
        self.strict = False
        self.is_async = True
        self.annotations = _annotations(listed)
        self._schema = dict(listed.input_schema)
        self.fn = self._not_directly

    def __repr__(self) -> str:
        return f"<MCPTool {self.name} of {self.server.name}>"

    def _not_directly(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self!r} is called by a worker, not directly")

    @property
    def parameters(self) -> dict[str, Any]:
        return copy.deepcopy(self._schema)

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters, False)

    def validate(self, raw_arguments: str | Mapping[str, Any] | None) -> dict[str, Any]:
        """The model's arguments as a JSON object; the server checks them against its schema."""
        if raw_arguments is None or raw_arguments == "":
            return {}
        if isinstance(raw_arguments, Mapping):
            return dict(raw_arguments)
        try:
            value = json.loads(raw_arguments)
        except ValueError as exc:
            raise ToolArgumentsError(
                self.name, f"the arguments are not valid JSON ({exc})"
            ) from exc
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ToolArgumentsError(self.name, "the arguments must be a JSON object")
        return value

    def bind(
        self,
        arguments: Mapping[str, Any],
        *,
        call_id: str,
        turn: int = 0,
        deps: Any = None,
        on_progress: ProgressCallback | None = None,
    ) -> Callable[[CancelToken], Any]:
        """One ``tools/call`` as ``call(token)`` for `ConcurrentMap` (see `MCPCall`)."""
        return MCPCall(self.server, self.remote_name, dict(arguments), on_progress)


def listed_tool(server: MCPServer, listed: types.Tool) -> MCPTool:
    return MCPTool(server, listed)


def _annotations(listed: types.Tool) -> ToolAnnotations | None:
    given = listed.annotations
    if given is None:
        return ToolAnnotations(title=listed.title) if listed.title else None
    return ToolAnnotations(
        title=given.title or listed.title,
        read_only=given.read_only_hint,
        destructive=given.destructive_hint,
        idempotent=given.idempotent_hint,
        open_world=given.open_world_hint,
    )
