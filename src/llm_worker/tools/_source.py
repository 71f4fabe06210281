"""ToolSource: something that provides tools only known at run time (an MCP server).

Invariants:
* A source is listed by each toolset that holds it when a run first needs its tools, and again
  only when its ``tools_version`` moved (its list changed, it reconnected); listing is a
  cancellation point like any other await of a run.
* A source owns whatever it started (a process, a connection, a task) and releases all of it in
  ``aclose()``, which is bounded in time and cannot be cut half-way; the worker's ``aclose()``
  (or leaving ``async with worker``) closes every source it was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._tool import Tool

__all__ = ["ToolSource"]


@runtime_checkable
class ToolSource(Protocol):
    """Tools listed from elsewhere; ``name`` prefixes a listed tool whose name is taken."""

    name: str

    @property
    def tools_version(self) -> int:
        """A number that changes whenever the source's tools may have changed."""
        ...

    async def list_tools(self) -> Sequence[Tool[..., Any]]:
        """The source's tools now. Cancellation: stops waiting; the source stays usable."""
        ...

    async def aclose(self) -> None:
        """Release everything the source started. Shielded and bounded in time."""
        ...
