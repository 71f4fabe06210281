"""A tool's JSON schema from its signature, and OpenAI's strict mode (tools/_schema)."""

import pytest

from llm_worker.tools import ToolSpec, tool

from ._helpers import Order, add, keys_anywhere, place_order

# -- schema from the signature ------------------------------------------------------------------


def test_schema_has_types_defaults_and_required_from_the_signature() -> None:
    @tool
    def search(query: str, limit: int = 10, ratio: float = 0.5, exact: bool = False) -> str:
        return query

    params = search.spec.parameters
    assert params["type"] == "object"
    assert params["additionalProperties"] is False
    assert params["required"] == ["query"]
    assert params["properties"] == {
        "query": {"type": "string"},
        "limit": {"type": "integer", "default": 10},
        "ratio": {"type": "number", "default": 0.5},
        "exact": {"type": "boolean", "default": False},
    }
    assert "title" not in params


def test_tool_without_parameters_has_an_empty_object_schema() -> None:
    @tool
    def now() -> str:
        return "noon"

    assert now.spec.parameters == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }


def test_literal_and_enum_parameters_become_enums_without_ref_siblings() -> None:
    props = place_order.spec.parameters["properties"]
    assert props["priority"]["enum"] == ["low", "high"]
    assert props["priority"]["default"] == "low"
    # An enum with a description is inlined: OpenAI's strict mode rejects "$ref" with siblings.
    assert props["color"]["enum"] == ["red", "blue"]
    assert "$ref" not in props["color"]


def test_nested_models_live_in_top_level_defs() -> None:
    @tool
    def ship(order: Order, backup: Order | None = None) -> str:
        return order.customer

    params = ship.spec.parameters
    assert params["properties"]["order"] == {"$ref": "#/$defs/Order"}
    assert set(params["$defs"]) == {"Order", "LineItem"}
    line_ref = params["$defs"]["Order"]["properties"]["lines"]["items"]["$ref"]
    assert line_ref == "#/$defs/LineItem"
    assert "$defs" not in keys_anywhere(params["$defs"])  # $defs only at the top level
    assert params["required"] == ["order"]


def test_described_model_parameters_are_inlined_and_unused_defs_dropped() -> None:
    params = place_order.spec.parameters
    order = params["properties"]["order"]
    assert order["description"] == "the order to place."
    assert "$ref" not in order  # a "$ref" with siblings is not accepted everywhere
    assert order["properties"]["lines"]["items"] == {"$ref": "#/$defs/LineItem"}
    assert set(params["$defs"]) == {"LineItem"}


def test_parameters_named_like_basemodel_attributes_work() -> None:
    @tool
    def f(json: str, model_config: int, schema: bool = True) -> str:
        return json

    assert list(f.spec.parameters["properties"]) == ["json", "model_config", "schema"]
    assert f.validate('{"json": "x", "model_config": 2}') == {
        "json": "x",
        "model_config": 2,
        "schema": True,
    }


def test_spec_parameters_are_a_fresh_copy_each_time() -> None:
    first = add.spec
    first.parameters["properties"].clear()
    assert add.spec.parameters["properties"] == {
        "a": {"type": "integer"},
        "b": {"type": "integer"},
    }
    assert add.spec == add.spec
    assert isinstance(add.spec, ToolSpec)


# -- strictness ---------------------------------------------------------------------------------


def test_strict_by_default_only_when_every_parameter_is_required() -> None:
    assert add.strict is True
    assert add.spec.strict is True
    assert place_order.strict is False  # defaults and an Order with an optional quantity


def test_strict_true_makes_every_property_required_everywhere() -> None:
    strict_order = tool(place_order.fn, name="strict_order", strict=True)
    params = strict_order.spec.parameters
    assert strict_order.spec.strict is True
    assert params["required"] == ["order", "priority", "color", "note"]
    line = params["$defs"]["LineItem"]
    assert line["required"] == ["sku", "quantity"]
    assert line["additionalProperties"] is False
    assert "default" not in params["properties"]["note"]  # a null default is dropped


def test_strict_false_is_respected_and_strict_true_refuses_free_form_objects() -> None:
    assert tool(add.fn, name="loose", strict=False).spec.strict is False

    def tally(counts: dict[str, int]) -> int:
        return sum(counts.values())

    assert tool(tally).strict is False
    with pytest.raises(
        ValueError, match=r"cannot be strict: properties.counts is an object without fixed"
    ):
        tool(tally, strict=True)
