"""`OutputSchema`: an output type's JSON schema, its validation, and its partial validation.

Invariants:
* Every output type is validated through one pydantic model: the type itself when it is a
  `BaseModel`, else a wrapper with one field ``value`` (the providers' structured output wants an
  object at the top), unwrapped again before the value reaches the caller.
* `validate` raises (`OutputInvalid`) for an answer that is not a whole, valid value; `partial`
  never raises: it gives the value validated so far from JSON cut anywhere — an instance of the
  output type when what came already validates as one (pydantic's partial validation), else of
  its *partial twin* (the same fields, every one optional, nested models too), else None.
* Everything here is built once per output type (`output_schema` is cached); nothing awaits.
"""

from __future__ import annotations

import functools
import re
import types
from typing import Any, Generic, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError, create_model

from .._error_base import LLMWorkerError
from ..tools._schema import tool_schema
from ._spec import OutputMode, OutputSpec

T = TypeVar("T")

_TRAILING: Any = "trailing-strings"  # partial strings at the end are kept, not dropped
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


class OutputInvalid(LLMWorkerError, ValueError):
    """An answer that is not a valid value of the output type; the text says why, for the model."""


class OutputSchema(Generic[T]):
    """The schema and validators of one output type (see the module invariants)."""

    def __init__(self, output_type: type[T] | Any) -> None:
        self.output_type = output_type
        self.wrapped = not (isinstance(output_type, type) and issubclass(output_type, BaseModel))
        model: type[BaseModel] = (
            create_model("Output", value=(output_type, ...)) if self.wrapped else output_type  # type: ignore[assignment]
        )
        self.model = model
        label = getattr(output_type, "__name__", None) or "Output"
        self.name = _NAME_UNSAFE.sub("_", label)[:64] or "Output"
        self.description = (model.__doc__ or "").strip() if not self.wrapped else ""
        try:
            self.schema, self.strict = tool_schema(self.name, model, strict=True)
        except ValueError:
            self.schema, self.strict = tool_schema(self.name, model, strict=None)
        self._adapter: TypeAdapter[BaseModel] = TypeAdapter(model)
        self._partial_adapter: TypeAdapter[BaseModel] = TypeAdapter(partial_twin(model))

    def spec(self, mode: OutputMode) -> OutputSpec:
        """The request option for ``mode``."""
        return OutputSpec(
            name=self.name,
            schema=self.schema,
            strict=self.strict,
            mode=mode,
            description=self.description,
        )

    def validate(self, text: str) -> T:
        """The value ``text`` holds; `OutputInvalid` (its message meant for the model) if none."""
        try:
            validated = self._adapter.validate_json(json_text(text))
        except ValidationError as exc:
            raise OutputInvalid(_explain(exc)) from exc
        return self._unwrap(validated)  # type: ignore[no-any-return]

    def partial(self, text: str) -> Any:
        """The value validated so far from ``text`` cut anywhere (see the module); never raises."""
        text = json_text(text)
        if not text:
            return None
        for adapter in (self._adapter, self._partial_adapter):
            try:
                validated = adapter.validate_json(text, experimental_allow_partial=_TRAILING)
            except ValidationError:
                continue
            except Exception:  # a stop's clean-up calls this: nothing may escape
                return None
            return self._unwrap(validated)
        return None

    def _unwrap(self, validated: BaseModel) -> Any:
        return getattr(validated, "value", None) if self.wrapped else validated


@functools.cache
def output_schema(output_type: Any) -> OutputSchema[Any]:
    """The (cached) `OutputSchema` of ``output_type``."""
    return OutputSchema(output_type)


def json_text(text: str) -> str:
    """The JSON in an answer: without a Markdown code fence or words before the first brace."""
    text = text.strip()
    if text.startswith("```"):
        text = text[3:].removeprefix("json").strip()
        text = text.removesuffix("```").rstrip()
    if text and text[0] not in "{[":
        start = text.find("{")
        text = text[start:] if start >= 0 else text
    return text


def _explain(error: ValidationError) -> str:
    problems = []
    for detail in error.errors(include_url=False)[:10]:
        where = ".".join(str(part) for part in detail["loc"]) or "the answer"
        problems.append(f"{where}: {detail['msg']}")
    return "; ".join(problems)


# -- the partial twin ---------------------------------------------------------------------------


_twins: dict[type[BaseModel], type[BaseModel]] = {}
_building: set[type[BaseModel]] = set()


def partial_twin(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` with every field optional (default None), nested models likewise: what a cut
    JSON object can already be validated as. A model that contains itself keeps its own type
    where it recurs (its partial values there are validated whole, or dropped)."""
    twin = _twins.get(model)
    if twin is not None:
        return twin
    _building.add(model)
    try:
        fields: dict[str, Any] = {
            name: (_optional(_partial_type(info.annotation)), None)
            for name, info in model.model_fields.items()
        }
    finally:
        _building.discard(model)
    twin = _twins[model] = create_model(f"Partial{model.__name__}", **fields)
    return twin


def _optional(annotation: Any) -> Any:
    return annotation | None if annotation is not Any else Any


def _partial_type(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation if annotation in _building else partial_twin(annotation)
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is None or not args:
        return annotation
    if origin in (Union, types.UnionType):
        return functools.reduce(lambda a, b: a | b, (_partial_type(arg) for arg in args))
    if origin in (list, set, frozenset):
        return origin[_partial_type(args[0])]
    if origin is dict and len(args) == 2:
        return dict[args[0], _partial_type(args[1])]  # type: ignore[misc,valid-type]
    if origin is tuple:
        return tuple[tuple(_partial_type(arg) for arg in args)]  # type: ignore[misc]
    return annotation
