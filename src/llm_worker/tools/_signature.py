"""A tool's signature → a pydantic model of its arguments, and validation of a model's arguments.

Invariants:
* Everything about a signature that can be wrong (``*args``, unresolvable or non-JSON types, two
  context parameters, an unbound ``self``) fails at decoration time, not in the middle of a run.
* A model's arguments reach a tool only through `validate_arguments`, which raises nothing but
  `ToolArgumentsError` — for any text or JSON value — whose message is short enough to show to the
  model so that it can correct itself. Bad arguments are a result, never a crash.
* The arguments model's fields are named ``p0``, ``p1``, ... with the parameter names as aliases,
  so a parameter may be called anything (even ``model_config`` or ``schema``).
"""

from __future__ import annotations

import functools
import inspect
import json
import reprlib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from .._error_base import LLMWorkerError
from ._context import ToolContext

__all__ = [
    "Param",
    "ToolArgumentsError",
    "arguments_model",
    "is_async",
    "unwrap",
    "validate_arguments",
]

_MAX_ERRORS_SHOWN = 5


class ToolArgumentsError(LLMWorkerError, ValueError):
    """A model's arguments for a tool were not valid JSON or did not match its parameters.

    ``str()`` is meant for the model (it is sent back as the tool's error result); ``problems``
    lists each problem on its own, for logs and UIs.
    """

    def __init__(self, tool_name: str, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.tool_name = tool_name
        self.problems = problems if problems is not None else [message]


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a tool, in signature order."""

    name: str
    field: str  # the name in the arguments model; the parameter name is its alias
    positional_only: bool
    is_context: bool = False


def unwrap(fn: Callable[..., Any]) -> Callable[..., Any]:
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


def is_async(fn: Callable[..., Any]) -> bool:
    """True if calling ``fn`` gives a coroutine (a partial or wrapper of one counts too)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(unwrap(fn))


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


def arguments_model(
    name: str,
    fn: Callable[..., Any],
    target: Callable[..., Any],
    doc_params: dict[str, str],
) -> tuple[list[Param], type[BaseModel]]:
    """The parameters in signature order, and a model that validates all but the context."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"tool {name!r}: cannot read the signature of {fn!r}: {exc}") from exc
    hints = _type_hints(name, target)
    params: list[Param] = []
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
            params.append(Param(param.name, "", positional_only, is_context=True))
            continue
        default = ... if param.default is param.empty else param.default
        extra: dict[str, Any] = {"alias": param.name}
        doc = doc_params.get(param.name)
        if doc and not _has_description(annotation, default):
            extra["description"] = doc
        field_name = f"p{index}"
        fields[field_name] = (Annotated[annotation, Field(**extra)], default)
        params.append(Param(param.name, field_name, positional_only))
    try:
        model = create_model(
            f"{name}_arguments",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
    except Exception as exc:
        raise TypeError(f"tool {name!r}: its parameters cannot be validated: {exc}") from exc
    return params, typing.cast("type[BaseModel]", model)


# -- validation -----------------------------------------------------------------------------------


def validate_arguments(
    name: str,
    model: type[BaseModel],
    params: list[Param],
    raw_arguments: str | bytes | bytearray | Mapping[str, Any] | None,
) -> dict[str, Any]:
    """What `Tool.validate` does for tool ``name``: see there. Raises only `ToolArgumentsError`."""
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
                    name,
                    f"invalid arguments for tool {name!r}: arguments are not valid JSON: {detail}",
                ) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        message = (
            f"invalid arguments for tool {name!r}: expected a JSON object, "
            f"got {_json_type(data)} ({_short(data)})"
        )
        raise ToolArgumentsError(name, message)
    try:
        validated = model.model_validate(dict(data))
    except ValidationError as exc:
        problems = _describe_errors(exc)
        shown = problems[:_MAX_ERRORS_SHOWN]
        more = len(problems) - len(shown)
        message = f"invalid arguments for tool {name!r}: " + "; ".join(shown)
        if more:
            message += f"; and {more} more problem{'s' if more > 1 else ''}"
        raise ToolArgumentsError(name, message, problems) from None
    except Exception as exc:  # a user validator raising something odd, a recursion limit...
        message = f"invalid arguments for tool {name!r}: {_describe_exception(exc)}"
        raise ToolArgumentsError(name, message) from exc
    return {p.name: getattr(validated, p.field) for p in params if not p.is_context}


# -- error messages ------------------------------------------------------------------------------

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
