"""JSON schema of a tool's parameters, OpenAI's strict mode, and the provider-neutral ToolSpec.

Invariants:
* A tool's schema is an ``object`` with ``properties``, ``required``, ``additionalProperties:
  false`` and, only if used, top-level ``$defs``; no ``$ref`` has siblings unless it is recursive.
* ``strict=None`` makes a tool strict only when its schema already is; ``strict=True`` makes it so
  or fails at decoration time, naming the first problem; ``strict=False`` never.
* `ToolSpec` is provider-neutral: providers translate it; nothing here knows a wire format.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

__all__ = ["ToolSpec", "tool_schema"]


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


def tool_schema(
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
