"""Signature → arguments model: what is refused at decoration, validation and its messages
(tools/_signature)."""

import json
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, field_validator

from llm_worker.tools import ToolArgumentsError, ToolContext, tool

from ._helpers import Color, LineItem, Order, add, json_values, place_order, validate_or_message


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("def f(a: int, *rest: int) -> int: ...", "*rest"),
        ("def f(**extra: Any) -> int: ...", "**extra"),
    ],
)
def test_var_args_are_rejected_at_decoration(source: str, shown: str) -> None:
    namespace: dict[str, Any] = {"Any": Any}
    exec(source, namespace)
    with pytest.raises(
        TypeError, match=rf"tool 'f': \*{{1,2}}{shown.lstrip('*')} is not supported"
    ):
        tool(namespace["f"])


def test_non_json_parameter_types_are_rejected_at_decoration() -> None:
    def f(lock: threading.Lock) -> None:
        return None

    with pytest.raises(TypeError, match="tool 'f'"):
        tool(f)


def test_unannotated_parameters_accept_any_json_value() -> None:
    @tool
    def echo(value):  # type: ignore[no-untyped-def]
        return value

    assert echo.validate('{"value": [1, "a"]}') == {"value": [1, "a"]}
    assert echo.strict is False


def test_methods_and_callable_objects_can_be_tools() -> None:
    class Greeter:
        def __init__(self, greeting: str) -> None:
            self.greeting = greeting

        def greet(self, who: str) -> str:
            """Greet someone."""
            return f"{self.greeting}, {who}"

        async def __call__(self, who: str) -> str:
            return who

    with pytest.raises(TypeError, match="bound method"):
        tool(Greeter.greet)
    greet = tool(Greeter("hi").greet)
    assert greet.spec.parameters["required"] == ["who"]  # no "self"
    assert greet.description == "Greet someone."
    assert greet("bo") == "hi, bo"
    assert tool(Greeter("x"), name="call").is_async is True


# -- the context --------------------------------------------------------------------------------


def test_context_parameter_is_excluded_from_the_schema_whatever_its_name() -> None:
    @tool
    def f(x: int, run_info: ToolContext, y: int = 0) -> int:
        return x

    @tool
    def g(maybe: ToolContext | None = None) -> int:
        return 0

    assert list(f.spec.parameters["properties"]) == ["x", "y"]
    assert g.spec.parameters["properties"] == {}
    with pytest.raises(ToolArgumentsError, match="field 'run_info': Extra inputs"):
        f.validate({"x": 1, "run_info": {}})


def test_two_context_parameters_are_rejected() -> None:
    def f(a: ToolContext, b: ToolContext) -> None:
        return None

    with pytest.raises(TypeError, match="only one parameter"):
        tool(f)


# -- validation ---------------------------------------------------------------------------------


def test_validate_coerces_lax_values_and_fills_defaults() -> None:
    args = place_order.validate(
        '{"order": {"customer": "ann", "lines": [{"sku": "a", "quantity": "2"}]}, "color": "blue"}'
    )
    assert args["order"] == Order(customer="ann", lines=[LineItem(sku="a", quantity=2)])
    assert isinstance(args["order"], Order)
    assert (args["priority"], args["color"], args["note"]) == ("low", Color.BLUE, None)
    assert "ctx" not in args
    assert add.validate({"a": "3", "b": 4.0}) == {"a": 3, "b": 4}


@pytest.mark.parametrize("raw", ["", "   ", "null", None, {}])
def test_empty_arguments_mean_no_arguments(raw: Any) -> None:
    @tool
    def ping(times: int = 1) -> str:
        return "pong" * times

    assert ping.validate(raw) == {"times": 1}


def test_validation_error_is_readable_and_names_the_field() -> None:
    with pytest.raises(ToolArgumentsError) as caught:
        add.validate('{"a": 1, "b": "x"}')
    assert str(caught.value) == (
        "invalid arguments for tool 'add': field 'b': Input should be a valid integer, "
        "unable to parse string as an integer (got 'x')"
    )
    assert caught.value.tool_name == "add"


def test_missing_extra_and_nested_fields_are_each_reported() -> None:
    with pytest.raises(ToolArgumentsError) as caught:
        place_order.validate({"order": {"customer": "a", "lines": [{"quantity": 1}]}, "zzz": 1})
    message = str(caught.value)
    assert "field 'order.lines[0].sku': Field required" in message
    assert "field 'zzz': Extra inputs are not permitted (got 1)" in message
    assert len(caught.value.problems) == 2

    with pytest.raises(ToolArgumentsError, match=r"field 'a': Field required; field 'b'"):
        add.validate("{}")


def test_error_message_stays_short_for_huge_and_numerous_problems() -> None:
    @tool
    def many(a: int, b: int, c: int, d: int, e: int, f: int, g: int) -> int:
        return a

    with pytest.raises(ToolArgumentsError) as caught:
        many.validate({"a": "x" * 10_000})
    message = str(caught.value)
    assert len(message) < 600
    assert message.endswith("; and 2 more problems")
    assert len(caught.value.problems) == 7


def test_invalid_json_is_reported_as_invalid_json() -> None:
    with pytest.raises(ToolArgumentsError) as caught:
        add.validate('{"a": 1,')
    assert str(caught.value).startswith(
        "invalid arguments for tool 'add': arguments are not valid JSON: "
    )


@pytest.mark.parametrize(
    ("raw", "kind"),
    [("[1, 2]", "an array"), ('"text"', "a string"), ("3", "a number"), ("true", "a boolean")],
)
def test_json_that_is_not_an_object_is_rejected(raw: str, kind: str) -> None:
    with pytest.raises(ToolArgumentsError, match=f"expected a JSON object, got {kind}"):
        add.validate(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "]" * 100_000,  # deeper than the recursion limit
        '{"a": ' + "1" * 5000 + ', "b": 1}',  # more digits than int() accepts
        '{"a": NaN, "b": Infinity}',
        '{"a": 1, "b": 2}\x00',
        b'{"a": "\xff"}',
    ],
)
def test_pathological_input_becomes_a_tool_arguments_error(raw: Any) -> None:
    with pytest.raises(ToolArgumentsError):
        add.validate(raw)


def test_an_odd_exception_from_a_user_validator_becomes_a_tool_arguments_error() -> None:
    class Positive(BaseModel):
        value: int

        @field_validator("value")
        @classmethod
        def check(cls, value: int) -> int:
            if value < 0:
                raise TypeError("negative")
            return value

    @tool
    def f(p: Positive) -> int:
        return p.value

    with pytest.raises(ToolArgumentsError, match="TypeError: negative"):
        f.validate({"p": {"value": -1}})


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_validate_raises_only_tool_arguments_error_for_any_text(raw: str) -> None:
    for target in (add, place_order):
        result = validate_or_message(target, raw)
        if isinstance(result, str):
            assert result.startswith(f"invalid arguments for tool '{target.name}': ")
        else:
            assert set(result) <= {"a", "b", "order", "priority", "color", "note"}


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        json_values(),
        st.dictionaries(
            st.sampled_from(["a", "b", "order", "priority", "color", "note", "x"]),
            json_values(),
            max_size=5,
        ),
    ),
    st.booleans(),
)
def test_validate_raises_only_tool_arguments_error_for_any_json_value(
    value: Any, as_text: bool
) -> None:
    raw = json.dumps(value) if as_text else value
    for target in (add, place_order):
        result = validate_or_message(target, raw)
        assert result if isinstance(result, str) else isinstance(result, dict)
