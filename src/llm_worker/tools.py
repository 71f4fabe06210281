"""Tools: plain typed functions that a model can call, with schema and validation from signatures.

Invariants:
* A model's arguments reach a tool only through `Tool.validate`, and `Tool.validate` raises nothing
  but `ToolArgumentsError` — for any text or JSON value — whose message is short enough to show to
  the model so that it can correct itself. Bad arguments are a result, never a crash.
* Everything about a tool that can be wrong (``*args``, unresolvable or non-JSON types, a bad name,
  a schema that cannot be strict) fails at decoration time, not in the middle of a run.
* A call is made by `Tool.bind`, in the shape `ConcurrentMap` runs (``call(token)``): the tool sees
  its own token through `ToolContext`, and a per-tool timeout is just a deadline on that token, so
  a timed-out tool stops the same way as a cancelled one: token first, partial output, then hard.
* `ToolSpec` is provider-neutral: providers translate it; nothing here knows a wire format.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import json
import re
import reprlib
import textwrap
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, ParamSpec, TypeVar, overload

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema

from .cancel import CancelToken, Cause, Interrupted, checked_duration, move_on_cancel

__all__ = ["Tool", "ToolArgumentsError", "ToolContext", "ToolSpec", "Toolset", "tool"]

P = ParamSpec("P")
R = TypeVar("R")

# OpenAI and Anthropic both require tool names to match this.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_ERRORS_SHOWN = 5


# -- public value types -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a running tool knows about its call; injected into a parameter annotated with it.

    ``token`` is this call's own token: cancelled when the run is cancelled, when a sibling fails
    (if the worker is set so), or when the tool's timeout passes. Poll ``cancelled`` (sync tools)
    or ``await ctx.token.wait()`` (async tools) and return partial output. Every field has a
    default so that users can unit-test a tool with ``ToolContext()``.
    """

    token: CancelToken = field(default_factory=CancelToken)
    call_id: str = ""
    tool_name: str = ""
    turn: int = 0
    deps: Any = None

    @property
    def cancelled(self) -> bool:
        """True once this call should stop."""
        return self.token.cancelled

    @property
    def cause(self) -> Cause | None:
        """Why this call should stop (``cause.kind == "deadline"`` for a timeout), or None."""
        return self.token.cause

    def raise_if_cancelled(self) -> None:
        """Raise `Interrupted` if this call should stop; for tools that would rather not return."""
        self.token.raise_if_cancelled()


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A provider-neutral description of a tool, as sent in a model request.

    ``parameters`` is a JSON schema of type ``object`` with ``properties``, ``required``,
    ``additionalProperties: false`` and, if needed, top-level ``$defs``. When ``strict`` is True
    every object in it lists all its properties as required, so OpenAI's strict mode accepts it.
    """

    name: str
    description: str
    parameters: dict[str, Any] = field(hash=False)
    strict: bool = False


class ToolArgumentsError(ValueError):
    """A model's arguments for a tool were not valid JSON or did not match its parameters.

    ``str()`` is meant for the model (it is sent back as the tool's error result); ``problems``
    lists each problem on its own, for logs and UIs.
    """

    def __init__(self, tool_name: str, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.tool_name = tool_name
        self.problems = problems if problems is not None else [message]


# -- the tool -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    field: str  # the name in the arguments model; the parameter name is its alias
    positional_only: bool
    is_context: bool = False


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

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        strict: bool | None = None,
    ) -> None:
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
        self.is_async = _is_async(fn)
        target = _unwrap(fn)
        if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
            raise TypeError(f"tool {self.name!r}: generator functions cannot be tools")

        doc_description, doc_params = _parse_docstring(inspect.getdoc(target))
        self.description = description if description is not None else doc_description
        self._signature, self.arguments_model = _arguments_model(self.name, fn, target, doc_params)
        self._params = [p for p in self._signature if not p.is_context]
        self._context = next((p for p in self._signature if p.is_context), None)
        schema, self.strict = _tool_schema(self.name, self.arguments_model, strict)
        self._schema_json = json.dumps(schema)

    def __repr__(self) -> str:
        params = ", ".join(p.name for p in self._params)
        return f"<Tool {self.name}({params}){' async' if self.is_async else ''}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the underlying function directly (no validation, no context injection)."""
        return self.fn(*args, **kwargs)

    # -- describing ---------------------------------------------------------------------------

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
        data: object = raw_arguments
        if isinstance(data, str | bytes | bytearray):
            if not data.strip():
                data = {}
            else:
                try:
                    data = json.loads(data)
                except (ValueError, RecursionError) as exc:
                    detail = _json_error(exc)
                    raise ToolArgumentsError(
                        self.name,
                        f"invalid arguments for tool {self.name!r}: "
                        f"arguments are not valid JSON: {detail}",
                    ) from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            message = (
                f"invalid arguments for tool {self.name!r}: expected a JSON object, "
                f"got {_json_type(data)} ({_short(data)})"
            )
            raise ToolArgumentsError(self.name, message)
        try:
            validated = self.arguments_model.model_validate(dict(data))
        except ValidationError as exc:
            problems = _describe_errors(exc)
            shown = problems[:_MAX_ERRORS_SHOWN]
            more = len(problems) - len(shown)
            message = f"invalid arguments for tool {self.name!r}: " + "; ".join(shown)
            if more:
                message += f"; and {more} more problem{'s' if more > 1 else ''}"
            raise ToolArgumentsError(self.name, message, problems) from None
        except Exception as exc:  # a user validator raising something odd, a recursion limit...
            message = f"invalid arguments for tool {self.name!r}: {_describe_exception(exc)}"
            raise ToolArgumentsError(self.name, message) from exc
        return {p.name: getattr(validated, p.field) for p in self._params}

    # -- running ------------------------------------------------------------------------------

    def bind(
        self,
        arguments: Mapping[str, Any],
        *,
        call_id: str,
        turn: int = 0,
        deps: Any = None,
        grace: float | None = 1.0,
    ) -> Callable[[CancelToken], Awaitable[Any] | Any]:
        """One call of this tool, as ``call(token)`` for `ConcurrentMap`.

        ``arguments`` is what `validate` returned. An async tool gives an async callable; a sync
        tool gives a sync one (the map runs it in a thread). With a ``timeout`` the call's token
        is cancelled (kind ``"deadline"``) after ``timeout`` seconds, and the timer is disarmed
        when the call ends. An async tool that ignores its token is then cancelled hard ``grace``
        seconds later (raising `Interrupted`; None or ``inf``: never); a sync one cannot be, so it
        is the map's job. ``grace`` is checked here, like every duration (`checked_duration`).
        """
        grace = checked_duration(grace, f"tool {self.name!r}: grace period")
        fn: Callable[..., Any] = self.fn
        args = dict(arguments)
        name, timeout = self.name, self.timeout
        reason = f"tool {name} timed out after {timeout:g}s" if timeout is not None else ""

        def context(token: CancelToken) -> ToolContext:
            return ToolContext(token=token, call_id=call_id, tool_name=name, turn=turn, deps=deps)

        if self.is_async:

            async def call_async(token: CancelToken) -> Any:
                positional, keywords = self._call_arguments(args, context(token))
                if timeout is None:
                    return await fn(*positional, **keywords)
                disarm = token.cancel_after(timeout, reason=reason)
                hard = CancelToken(f"{name} {call_id} hard stop")
                hard_after = None if grace is None else timeout + grace
                disarm_hard = hard.cancel_after(hard_after, reason=f"{reason}; grace over")
                try:
                    with move_on_cancel(hard):
                        return await fn(*positional, **keywords)
                    raise Interrupted(token.cause or Cause.interrupt("deadline", reason))
                finally:
                    disarm()
                    disarm_hard()

            call_async.__qualname__ = call_async.__name__ = f"{name}[{call_id}]"
            return call_async

        def call_sync(token: CancelToken) -> Any:
            positional, keywords = self._call_arguments(args, context(token))
            if timeout is None:
                return fn(*positional, **keywords)
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

        ``str`` as is, ``None`` as ``""``, bytes as a short placeholder, JSON-like values
        (models, dataclasses, dicts, lists, numbers) as compact JSON, anything else as ``str()``.
        """
        return _render_result(value)


def _render_result(value: object) -> str:
    if isinstance(value, str):
        return value
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
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    strict: bool | None = None,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Make a `Tool` of an async or sync function: ``@tool`` or ``@tool(name=..., ...)``.

    The docstring's text before its sections is the description; its ``Args:`` (Google),
    ``:param x:`` (reST) or ``Parameters`` (numpy) entries describe the parameters. A parameter
    annotated `ToolContext` is injected, not shown to the model. ``timeout`` (seconds; None or
    ``inf``: no limit; checked here) cancels the call's token. ``strict``: None (default) makes
    the tool strict when its schema already is (every parameter required); True forces it
    (parameters with defaults become required in the schema); False never.
    """

    def decorate(function: Callable[P, R]) -> Tool[P, R]:
        if isinstance(function, Tool) and (name, description, timeout, strict) == (None,) * 4:
            return function
        return Tool(function, name=name, description=description, timeout=timeout, strict=strict)

    return decorate if fn is None else decorate(fn)


# -- the set of tools ---------------------------------------------------------------------------


class Toolset:
    """The tools of a worker, by unique name, in the order given."""

    def __init__(self, tools: Iterable[Tool[..., Any] | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool[..., Any]] = {}
        for item in tools:
            as_tool = item if isinstance(item, Tool) else tool(item)
            existing = self._tools.get(as_tool.name)
            if existing is not None:
                raise ValueError(
                    f"duplicate tool name {as_tool.name!r} ({existing.fn!r} and {as_tool.fn!r}): "
                    "tool names must be unique; rename one with @tool(name=...)"
                )
            self._tools[as_tool.name] = as_tool

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


# -- signature → arguments model ------------------------------------------------------------------


def _default_name(fn: Callable[..., Any]) -> str:
    inner = fn
    while isinstance(inner, functools.partial):
        inner = inner.func
    name = getattr(inner, "__name__", None)
    if not isinstance(name, str):
        name = type(inner).__name__
    return name


def _unwrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The function whose code, docstring and annotations describe ``fn``."""
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    target = inspect.unwrap(target)
    if not (inspect.isfunction(target) or inspect.ismethod(target)) and callable(target):
        call = getattr(type(target), "__call__", None)  # noqa: B004 -- a callable object
        if inspect.isfunction(call):
            target = call
    return typing.cast("Callable[..., Any]", target)


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(_unwrap(fn))


def _type_hints(name: str, target: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:
        pass
    try:  # ToolContext imported only for type checking is the common case
        return typing.get_type_hints(
            target, localns={"ToolContext": ToolContext}, include_extras=True
        )
    except Exception as exc:
        raise TypeError(
            f"tool {name!r}: cannot resolve the type hints of {target!r} ({exc}); "
            "define the types it uses at module level"
        ) from exc


def _is_context(annotation: Any) -> bool:
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, type):
        return issubclass(annotation, ToolContext)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_context(arg) for arg in typing.get_args(annotation))
    return False


def _has_description(annotation: Any, default: Any) -> bool:
    if isinstance(default, FieldInfo) and default.description:
        return True
    if typing.get_origin(annotation) is Annotated:
        return any(
            isinstance(meta, FieldInfo) and meta.description
            for meta in typing.get_args(annotation)[1:]
        )
    return False


def _arguments_model(
    name: str,
    fn: Callable[..., Any],
    target: Callable[..., Any],
    doc_params: dict[str, str],
) -> tuple[list[_Param], type[BaseModel]]:
    """The parameters in signature order, and a model that validates all but the context."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"tool {name!r}: cannot read the signature of {fn!r}: {exc}") from exc
    hints = _type_hints(name, target)
    params: list[_Param] = []
    has_context = False
    fields: dict[str, Any] = {}
    for index, param in enumerate(signature.parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise TypeError(
                f"tool {name!r}: {star}{param.name} is not supported; a tool's parameters must "
                "be named so that they can be described to the model"
            )
        if index == 0 and param.name in ("self", "cls") and param.name not in hints:
            raise TypeError(
                f"tool {name!r}: its first parameter is {param.name!r}; make a tool of the bound "
                "method (tool(obj.method)) rather than decorating it in the class"
            )
        annotation = hints.get(param.name, Any)
        positional_only = param.kind is param.POSITIONAL_ONLY
        if _is_context(annotation):
            if has_context:
                raise TypeError(f"tool {name!r}: only one parameter can take the ToolContext")
            has_context = True
            params.append(_Param(param.name, "", positional_only, is_context=True))
            continue
        default = ... if param.default is param.empty else param.default
        extra: dict[str, Any] = {"alias": param.name}
        doc = doc_params.get(param.name)
        if doc and not _has_description(annotation, default):
            extra["description"] = doc
        field_name = f"p{index}"
        fields[field_name] = (Annotated[annotation, Field(**extra)], default)
        params.append(_Param(param.name, field_name, positional_only))
    try:
        model = create_model(
            f"{name}_arguments",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
    except Exception as exc:
        raise TypeError(f"tool {name!r}: its parameters cannot be validated: {exc}") from exc
    return params, typing.cast("type[BaseModel]", model)


# -- JSON schema --------------------------------------------------------------------------------


class _SchemaGenerator(GenerateJsonSchema):
    """Pydantic's generator without the titles it derives from field names (noise to a model)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


_STRICT_KEYWORDS = frozenset(
    {
        *("type", "properties", "required", "additionalProperties", "items", "anyOf", "enum"),
        *("const", "$ref", "$defs", "description", "title", "default", "pattern", "format"),
        *("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
        *("minItems", "maxItems"),
    }
)


def _tool_schema(
    name: str, model: type[BaseModel], strict: bool | None
) -> tuple[dict[str, Any], bool]:
    try:
        raw = model.model_json_schema(schema_generator=_SchemaGenerator)
    except Exception as exc:
        raise TypeError(f"tool {name!r}: its parameters have no JSON schema: {exc}") from exc
    defs: dict[str, Any] = raw.pop("$defs", {})
    schema: dict[str, Any] = {
        "type": "object",
        "properties": raw.get("properties", {}),
        "required": raw.get("required", []),
        "additionalProperties": False,
    }
    if defs:
        schema["$defs"] = defs
    _inline_refs_with_siblings(schema, defs, expanding=())
    _prune_defs(schema)
    if strict is False:
        return schema, False
    if strict is None:
        return schema, _strict_problem(schema, "") is None
    _make_strict(schema)
    problem = _strict_problem(schema, "")
    if problem is not None:
        raise ValueError(f"tool {name!r} cannot be strict: {problem}; use strict=False")
    return schema, True


def _subschemas(schema: dict[str, Any], path: str) -> Iterator[tuple[dict[str, Any], str]]:
    for key in ("properties", "$defs"):
        value = schema.get(key)
        if isinstance(value, dict):
            for sub_name, sub in value.items():
                if isinstance(sub, dict):
                    yield sub, f"{path}.{key}.{sub_name}" if path else f"{key}.{sub_name}"
    for key in ("items", "additionalProperties", "not"):
        value = schema.get(key)
        if isinstance(value, dict):
            yield value, f"{path}.{key}" if path else key
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        value = schema.get(key)
        if isinstance(value, list):
            for i, sub in enumerate(value):
                if isinstance(sub, dict):
                    yield sub, f"{path}.{key}[{i}]" if path else f"{key}[{i}]"


def _inline_refs_with_siblings(
    schema: dict[str, Any], defs: dict[str, Any], expanding: tuple[str, ...]
) -> None:
    """Replace ``{"$ref": r, "description": ...}`` by the referenced schema plus its siblings.

    OpenAI's strict mode rejects a ``$ref`` with sibling keywords; a recursive reference is left
    as it is (it cannot be inlined).
    """
    ref = schema.get("$ref")
    if isinstance(ref, str) and len(schema) > 1 and ref.startswith("#/$defs/"):
        def_name = ref.removeprefix("#/$defs/")
        target = defs.get(def_name)
        if isinstance(target, dict) and def_name not in expanding:
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema.clear()
            schema.update(json.loads(json.dumps(target)))
            schema.update(siblings)
            expanding = (*expanding, def_name)
    for sub, _ in list(_subschemas(schema, "")):
        _inline_refs_with_siblings(sub, defs, expanding)


def _prune_defs(schema: dict[str, Any]) -> None:
    defs = schema.get("$defs")
    if not isinstance(defs, dict):
        return
    used: set[str] = set()
    pending = [{k: v for k, v in schema.items() if k != "$defs"}]
    while pending:
        for ref in _refs(pending.pop()):
            name = ref.removeprefix("#/$defs/")
            if name not in used and name in defs:
                used.add(name)
                pending.append(defs[name])
    if used:
        schema["$defs"] = {k: v for k, v in defs.items() if k in used}
    else:
        del schema["$defs"]


def _refs(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _make_strict(schema: dict[str, Any]) -> None:
    """What OpenAI's own SDK does: every property required, no extra properties, no null default."""
    properties = schema.get("properties")
    if isinstance(properties, dict):
        schema["required"] = list(properties)
        schema.setdefault("additionalProperties", False)
    if "default" in schema and schema["default"] is None:
        del schema["default"]
    for sub, _ in _subschemas(schema, ""):
        _make_strict(sub)


def _strict_problem(schema: dict[str, Any], path: str) -> str | None:
    """Why ``schema`` is not acceptable to OpenAI's strict mode as it is, or None if it is."""
    where = path or "the parameters"
    unsupported = set(schema) - _STRICT_KEYWORDS
    if unsupported:
        return f"{where} uses {', '.join(sorted(unsupported))}"
    if not schema.keys() & {"type", "anyOf", "enum", "const", "$ref"}:
        return f"{where} accepts any value"
    is_object = schema.get("type") == "object" or "properties" in schema
    if is_object:
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return f"{where} is an object without fixed properties"
        if schema.get("additionalProperties", False) is not False:
            return f"{where} allows additional properties"
        missing = [key for key in properties if key not in schema.get("required", [])]
        if missing:
            return f"{where} has optional properties ({', '.join(missing)})"
    for sub, sub_path in _subschemas(schema, path):
        if sub_path.endswith(".additionalProperties") or sub_path == "additionalProperties":
            return f"{where} allows additional properties"
        problem = _strict_problem(sub, sub_path)
        if problem is not None:
            return problem
    return None


# -- docstrings ---------------------------------------------------------------------------------

_PARAM_SECTIONS = frozenset(
    {
        *("args", "arguments", "parameters", "params"),
        *("keyword args", "keyword arguments", "other parameters"),
    }
)
_OTHER_SECTIONS = frozenset(
    {
        *("returns", "return", "yields", "yield", "raises", "raise", "exceptions", "examples"),
        *("example", "note", "notes", "warning", "warnings", "see also", "attributes", "todo"),
        *("references",),
    }
)
_REST_FIELD = re.compile(r"^:\w[^:]*:")
_REST_PARAM = re.compile(
    r"^:(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*\s)?\**(\w+)\s*:(.*)$"
)
_GOOGLE_ENTRY = re.compile(r"^\**(\w+)\s*(?:\([^)]*\))?\s*:(.*)$")
_NUMPY_ENTRY = re.compile(r"^\**(\w+(?:\s*,\s*\**\w+)*)\s*(?::.*)?$")
_DASHES = re.compile(r"^-{3,}$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description (text before any section) and per-parameter descriptions of a docstring.

    Understands Google (``Args:``), reST (``:param x:``) and numpy (``Parameters`` + dashes)
    styles; anything it does not understand stays in the description or is ignored.
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    params: dict[str, str] = {}
    description_end = len(lines)
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        indent = _indent(lines[i])
        header = stripped[:-1].strip().lower() if stripped.endswith(":") else None
        if header in _PARAM_SECTIONS or header in _OTHER_SECTIONS:  # Google
            description_end = min(description_end, i)
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
                j += 1
            if header in _PARAM_SECTIONS:
                params.update(_google_entries(lines[i + 1 : j]))
            i = j
            continue
        if i + 1 < len(lines) and _DASHES.match(lines[i + 1].strip()) and stripped:  # numpy
            description_end = min(description_end, i)
            j = i + 2
            while j < len(lines) and not (
                j + 1 < len(lines) and _DASHES.match(lines[j + 1].strip()) and lines[j].strip()
            ):
                j += 1
            if stripped.lower() in _PARAM_SECTIONS:
                params.update(_numpy_entries(lines[i + 2 : j]))
            i = j
            continue
        if _REST_FIELD.match(stripped):  # reST
            description_end = min(description_end, i)
            j = i + 1
            while (
                j < len(lines)
                and lines[j].strip()
                and (_indent(lines[j]) > indent or not _REST_FIELD.match(lines[j].strip()))
            ):
                j += 1
            match = _REST_PARAM.match(stripped)
            if match:
                text = " ".join(
                    [match.group(2).strip(), *(line.strip() for line in lines[i + 1 : j])]
                )
                params[match.group(1)] = text.strip()
            i = j
            continue
        i += 1
    description = "\n".join(lines[:description_end]).strip()
    return description, {k: v for k, v in params.items() if v}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _google_entries(block: list[str]) -> dict[str, str]:
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in textwrap.dedent("\n".join(block)).splitlines():
        if not line.strip():
            continue
        match = _GOOGLE_ENTRY.match(line) if not line[0].isspace() else None
        if match:
            current = entries.setdefault(match.group(1), [])
            current.append(match.group(2).strip())
        elif current is not None:
            current.append(line.strip())
    return {name: " ".join(part for part in parts if part) for name, parts in entries.items()}


def _numpy_entries(block: list[str]) -> dict[str, str]:
    entries: dict[str, list[str]] = {}
    current: list[list[str]] = []
    for line in textwrap.dedent("\n".join(block)).splitlines():
        if not line.strip():
            continue
        match = _NUMPY_ENTRY.match(line) if not line[0].isspace() else None
        if match:
            names = [n.strip().lstrip("*") for n in match.group(1).split(",")]
            current = [entries.setdefault(n, []) for n in names]
        else:
            for parts in current:
                parts.append(line.strip())
    return {name: " ".join(parts) for name, parts in entries.items()}


# -- error messages -----------------------------------------------------------------------------

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4
_repr.maxlevel = 2


def _short(value: object) -> str:
    try:
        return _repr.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


def _json_error(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _describe_exception(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe_errors(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for error in exc.errors(include_url=False, include_context=False):
        where = _location(error.get("loc", ()))
        text = error.get("msg", "invalid value")
        if error.get("type") != "missing":
            text += f" (got {_short(error.get('input'))})"
        problems.append(f"field {where!r}: {text}" if where else text)
    return problems


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
