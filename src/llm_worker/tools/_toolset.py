"""Toolset: a worker's tools by unique name — its own functions and the tools of its sources.

Invariants:
* Functions given to the worker keep their names; a listed tool whose name is already taken (by
  a function or by an earlier source) is exposed as ``<source>_<name>``, so no name ever
  shadows another and the model always calls what it saw.
* Sources are listed by `prepare` when a run first needs their tools and again only when a
  source's ``tools_version`` moved; between listings the sync views (`get`, `specs`,
  iteration) are stable.
* `aclose` closes every source, each bounded and shielded by the source itself, even when one of
  them fails; it never raises for a source that was never started.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anyio

from ._schema import ToolSpec
from ._source import ToolSource
from ._tool import Tool, tool

__all__ = ["Toolset"]

logger = logging.getLogger("llm_worker")

_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_-]")


class Toolset:
    """The tools of a worker, by unique name, in the order given; sources' tools after them."""

    def __init__(
        self, tools: Iterable[Tool[..., Any] | Callable[..., Any] | ToolSource] = ()
    ) -> None:
        self._own: dict[str, Tool[..., Any]] = {}
        self.sources: list[ToolSource] = []
        # id(source) → the source's tools_version when listed, and its tools as listed then
        self._listed: dict[int, tuple[int, list[Tool[..., Any]]]] = {}
        for item in tools:
            if isinstance(item, ToolSource) and not isinstance(item, Tool):
                self.sources.append(item)
                continue
            as_tool = item if isinstance(item, Tool) else tool(item)
            existing = self._own.get(as_tool.name)
            if existing is not None:
                raise ValueError(
                    f"duplicate tool name {as_tool.name!r} ({existing.fn!r} and {as_tool.fn!r}): "
                    "tool names must be unique; rename one with @tool(name=...)"
                )
            self._own[as_tool.name] = as_tool
        self._tools: dict[str, Tool[..., Any]] = dict(self._own)
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"<Toolset {', '.join(self._tools) or '(empty)'}>"

    def __iter__(self) -> Iterator[Tool[..., Any]]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool[..., Any]:
        return self._tools[name]

    @property
    def names(self) -> list[str]:
        """Tool names, in order."""
        return list(self._tools)

    def get(self, name: str) -> Tool[..., Any] | None:
        """The tool called ``name``, or None (the model may ask for a tool that does not exist)."""
        return self._tools.get(name)

    def specs(self) -> list[ToolSpec]:
        """Every tool's `ToolSpec`, in order."""
        return [t.spec for t in self._tools.values()]

    async def prepare(self) -> None:
        """List the sources not listed yet, or whose tools changed; a no-op without sources.

        Cancellation: stops at the listing in progress; tools already listed are kept and the
        sources stay usable (the next run lists what is still missing).
        """
        if not any(self._stale(source) for source in self.sources):
            return
        async with self._lock:
            for source in self.sources:
                if self._stale(source):
                    version = source.tools_version
                    self._listed[id(source)] = (version, list(await source.list_tools()))
                    self._tools = self._merged()

    def _stale(self, source: ToolSource) -> bool:
        listed = self._listed.get(id(source))
        return listed is None or listed[0] != source.tools_version

    def _merged(self) -> dict[str, Tool[..., Any]]:
        merged = dict(self._own)
        for source in self.sources:
            for listed in self._listed.get(id(source), (0, []))[1]:
                name = listed.name
                if name in merged:
                    prefix = _NOT_IN_NAMES.sub("_", source.name)
                    name = f"{prefix}_{listed.name}"[:64]
                    logger.info("tool %r of %s is exposed as %r", listed.name, source.name, name)
                    listed = copy.copy(listed)
                    listed.name = name
                merged.setdefault(name, listed)
        return merged

    async def aclose(self) -> None:
        """Close every source. Cancellation: each source's close is shielded and bounded."""
        for source in self.sources:
            try:
                await source.aclose()
            except Exception:
                logger.exception("closing tool source %s failed", source.name)
        self._listed.clear()
        self._tools = dict(self._own)
