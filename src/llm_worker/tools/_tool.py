"""Tool, @tool and Toolset: a plain typed function as something a model can call.

Invariants:
* Calling a `Tool` calls its function unchanged, so tools stay unit-testable; only the worker's
  path (`Tool.validate`, `Tool.bind`, `Tool.render_result`) validates, injects and renders.
* Everything about a tool that can be wrong (a bad name or timeout, a generator, what
  `_signature` and `_schema` refuse) fails at decoration time, not in the middle of a run.
* A call is made by `Tool.bind`, in the shape `ConcurrentMap` runs (``call(token)``): the tool sees
  its own token through `ToolContext`, and a per-tool timeout is just a deadline on that token, so
  a timed-out tool stops the same way as a cancelled one. Grace, then the hard stop (or abandoning
  a thread), is `ConcurrentMap`'s policy alone: nothing here arms a second timer.
* `Tool.render_result` never raises: any value becomes text for the model.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

import pydantic_core
from pydantic import BaseModel

from ..cancel import CancelToken, checked_duration
from ._context import ToolContext
from ._docstring import parse_docstring
from ._output import ToolOutput
from ._schema import ToolSpec, tool_schema
from ._signature import arguments_model, is_async, unwrap, validate_arguments

__all__ = ["Tool", "ToolAnnotations", "tool"]

ProgressCallback = Callable[[float, float | None, str | None], None]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class ToolAnnotations:
    """Hints about what a tool does, for hooks (e.g. ask before a destructive call).

    Given by ``@tool(annotations=...)`` or listed by an MCP server; None where nobody said.
    """

    title: str | None = None
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None


# OpenAI and Anthropic both require tool names to match this.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Tool(Generic[P, R]):
    """A function the model can call: its name, description, JSON schema and validator.

    Calling the `Tool` calls the function unchanged, so tools stay unit-testable. The worker uses
    `validate`, `bind` and `render_result`; providers use `spec`.
    """

    fn: Callable[P, R]
    name: str
    description: str
    timeout: float | None
    strict: bool
    is_async: bool
    arguments_model: type[BaseModel]  # validates the model's arguments (aliases = parameter names)
    annotations: ToolAnnotations | None

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        strict: bool | None = None,
        annotations: ToolAnnotations | None = None,
    ) -> None:
        self.annotations = annotations
        if isinstance(fn, Tool):
            fn = fn.fn
        if not callable(fn):
            raise TypeError(f"@tool needs a function, got {fn!r}")
        # __name__, __doc__, __wrapped__ for introspection; not __dict__, which could clobber ours
        functools.update_wrapper(self, fn, updated=())
        self.__name__: str = getattr(fn, "__name__", None) or _default_name(fn)
        self.fn = fn
        self.name = name if name is not None else _default_name(fn)
        if not _NAME_RE.match(self.name):
            raise ValueError(
                f"invalid tool name {self.name!r}: use 1-64 letters, digits, '_' or '-' "
                "(pass @tool(name=...) to choose one)"
            )
        # None or inf: no limit. 0 would cancel every call before it starts: surely a mistake.
        timeout = checked_duration(timeout, f"tool {self.name!r}: timeout")
        if timeout == 0:
            raise ValueError(
                f"tool {self.name!r}: timeout must be more than 0 seconds (None for no limit)"
            )
        self.timeout = timeout
        self.is_async = is_async(fn)
        target = unwrap(fn)
        if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
            raise TypeError(f"tool {self.name!r}: generator functions cannot be tools")

        doc_description, doc_params = parse_docstring(inspect.getdoc(target))
        self.description = description if description is not None else doc_description
        self._signature, self.arguments_model = arguments_model(self.name, fn, target, doc_params)
        self._params = [p for p in self._signature if not p.is_context]
        self._context = next((p for p in self._signature if p.is_context), None)
        schema, self.strict = tool_schema(self.name, self.arguments_model, strict)
        self._schema_json = json.dumps(schema)

    def __repr__(self) -> str:
        params = ", ".join(p.name for p in self._params)
        return f"<Tool {self.name}({params}){' async' if self.is_async else ''}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the underlying function directly (no validation, no context injection)."""
        return self.fn(*args, **kwargs)

    # -- describing ---------------------------------------------------------------------------

    @property
    def sees_its_token(self) -> bool:
        """True if the tool takes a `ToolContext`, so it can see a stop and return partial
        output: only such tools get the grace period; the others are stopped at once."""
        return self._context is not None

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments (a fresh copy: callers may transform it freely)."""
        result: dict[str, Any] = json.loads(self._schema_json)
        return result

    @property
    def spec(self) -> ToolSpec:
        """This tool as a provider-neutral `ToolSpec`."""
        return ToolSpec(self.name, self.description, self.parameters, self.strict)

    # -- validating ---------------------------------------------------------------------------

    def validate(self, raw_arguments: str | Mapping[str, Any] | None) -> dict[str, Any]:
        """Turn the model's arguments (JSON text or an already-parsed object) into call arguments.

        Returns a dict keyed by parameter name, defaults filled in, values converted (nested
        models are instances). Empty text and JSON ``null`` mean "no arguments". Raises only
        `ToolArgumentsError`.
        """
        return validate_arguments(self.name, self.arguments_model, self._signature, raw_arguments)

    # -- running ------------------------------------------------------------------------------

    def bind(
        self,
        arguments: Mapping[str, Any],
        *,
        call_id: str,
        turn: int = 0,
        deps: Any = None,
        on_progress: ProgressCallback | None = None,
    ) -> Callable[[CancelToken], Awaitable[Any] | Any]:
        """One call of this tool, as ``call(token)`` for `ConcurrentMap`.

        ``arguments`` is what `validate` returned; ``on_progress`` receives what the tool reports
        through `ToolContext.report_progress`. An async tool gives an async callable; a sync
        tool gives a sync one (the map runs it in a thread). With a ``timeout`` the call's token
        is cancelled (kind ``"deadline"``) after ``timeout`` seconds, and the timer is disarmed
        when the call ends. What happens to a call that ignores its token is the map's policy
        alone: it gets the map's grace, then an async call is cancelled hard and a sync one is
        abandoned in its thread.
        """
        fn: Callable[..., Any] = self.fn
        args = dict(arguments)
        name, timeout = self.name, self.timeout
        reason = f"tool {name} timed out after {timeout:g}s" if timeout is not None else ""

        def context(token: CancelToken) -> ToolContext:
            return ToolContext(
                token=token,
                call_id=call_id,
                tool_name=name,
                turn=turn,
                deps=deps,
                progress=on_progress,
            )

        if self.is_async:

            async def call_async(token: CancelToken) -> Any:
                positional, keywords = self._call_arguments(args, context(token))
                disarm = token.cancel_after(timeout, reason=reason)
                try:
                    return await fn(*positional, **keywords)
                finally:
                    disarm()

            call_async.__qualname__ = call_async.__name__ = f"{name}[{call_id}]"
            return call_async

        def call_sync(token: CancelToken) -> Any:
            positional, keywords = self._call_arguments(args, context(token))
            disarm = token.cancel_after(timeout, reason=reason)
            try:
                return fn(*positional, **keywords)
            finally:
                disarm()

        call_sync.__qualname__ = call_sync.__name__ = f"{name}[{call_id}]"
        return call_sync

    def _call_arguments(
        self, arguments: dict[str, Any], ctx: ToolContext
    ) -> tuple[list[Any], dict[str, Any]]:
        values = dict(arguments)
        if self._context is not None:
            values[self._context.name] = ctx
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for param in self._signature:
            if param.name not in values:
                continue  # let the function's own default (or TypeError) speak
            if param.positional_only:
                positional.append(values[param.name])
            else:
                keywords[param.name] = values[param.name]
        return positional, keywords

    def render_result(self, value: object) -> str:
        """The text sent back to the model for a tool's return value.

        ``str`` as is, a `ToolOutput` as its text, ``None`` as ``""``, bytes as a short
        placeholder, JSON-like values (models, dataclasses, dicts, lists, numbers) as compact
        JSON, anything else as ``str()``.
        """
        return _render_result(value)


def _render_result(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, ToolOutput):
        return value.text
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        size = value.nbytes if isinstance(value, memoryview) else len(value)
        return f"<{size} bytes of binary data>"
    if isinstance(value, enum.Enum) and isinstance(value.value, str):
        return value.value
    json_like = (BaseModel, Mapping, list, tuple, set, frozenset, int, float)
    if isinstance(value, json_like) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        try:
            return pydantic_core.to_json(value, serialize_unknown=True).decode()
        except Exception:  # circular references, bytes that are not UTF-8, ...
            pass
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__qualname__}>"


# -- the decorator ------------------------------------------------------------------------------


@overload
def tool(
    fn: Callable[P, R],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    strict: bool | None = None,
    annotations: ToolAnnotations | None = None,
) -> Tool[P, R]: ...


@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    strict: bool | None = None,
    annotations: ToolAnnotations | None = None,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    strict: bool | None = None,
    annotations: ToolAnnotations | None = None,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Make a `Tool` of an async or sync function: ``@tool`` or ``@tool(name=..., ...)``.

    The docstring's text before its sections is the description; its ``Args:`` (Google),
    ``:param x:`` (reST) or ``Parameters`` (numpy) entries describe the parameters. A parameter
    annotated `ToolContext` is injected, not shown to the model. ``timeout`` (seconds; None or
    ``inf``: no limit; checked here) cancels the call's token. ``strict``: None (default) makes
    the tool strict when its schema already is (every parameter required); True forces it
    (parameters with defaults become required in the schema); False never. ``annotations``
    (`ToolAnnotations`) are shown to hooks, e.g. to ask before a destructive call.
    """

    def decorate(function: Callable[P, R]) -> Tool[P, R]:
        options = (name, description, timeout, strict, annotations)
        if isinstance(function, Tool) and options == (None,) * 5:
            return function
        return Tool(
            function,
            name=name,
            description=description,
            timeout=timeout,
            strict=strict,
            annotations=annotations,
        )

    return decorate if fn is None else decorate(fn)


def _default_name(fn: Callable[..., Any]) -> str:
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    name = getattr(inner, "__name__", None)
    if not isinstance(name, str):
        name = type(inner).__name__
    return name
