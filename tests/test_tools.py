"""Tools: schema and validation from signatures, context injection, execution under cancellation."""

import dataclasses
import enum
import inspect
import json
import threading
import time
from typing import Annotated, Any, Literal

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, field_validator

from llm_worker.cancel import CancelToken, ConcurrentMap, Interrupted
from llm_worker.tools import Tool, ToolArgumentsError, ToolContext, Toolset, ToolSpec, tool

# -- module-level types and tools used by several tests -----------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class LineItem(BaseModel):
    sku: str
    quantity: int = 1


class Order(BaseModel):
    customer: str
    lines: list[LineItem]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
async def place_order(
    order: Order,
    ctx: ToolContext,
    priority: Literal["low", "high"] = "low",
    color: Color = Color.RED,
    note: str | None = None,
) -> str:
    """Place an order.

    Args:
        order: the order to place.
        priority: how urgent it is.
        color: wrapping paper
            colour, for gifts.
    """
    return f"{order.customer}:{len(order.lines)}:{priority}:{color.value}:{note}:{ctx.call_id}"


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=15,
    )


def validate_or_message(target: Tool[..., Any], raw: Any) -> dict[str, Any] | str:
    """The validated arguments, or the error message; any other exception fails the test."""
    try:
        return target.validate(raw)
    except ToolArgumentsError as exc:
        return str(exc)


def keys_anywhere(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(keys_anywhere(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_anywhere(v) for v in value))
    return set()


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


def test_google_docstring_gives_description_and_parameter_descriptions() -> None:
    spec = place_order.spec
    assert spec.description == "Place an order."  # the Args section is not in the description
    props = spec.parameters["properties"]
    assert props["order"]["description"] == "the order to place."
    assert props["priority"]["description"] == "how urgent it is."
    assert props["color"]["description"] == "wrapping paper colour, for gifts."
    assert "description" not in props["note"]


def test_description_keeps_paragraphs_and_drops_other_sections() -> None:
    @tool
    def f(x: int) -> int:
        """First paragraph.

        Second paragraph
        on two lines.

        Returns:
            the same number.

        Raises:
            ValueError: never.
        """
        return x

    assert f.description == "First paragraph.\n\nSecond paragraph\non two lines."


def test_rest_docstring_gives_parameter_descriptions() -> None:
    @tool
    def f(a: int, b: str) -> str:
        """Do a thing.

        :param a: the first
            argument.
        :param str b: the second.
        :returns: something.
        """
        return b

    assert f.description == "Do a thing."
    props = f.spec.parameters["properties"]
    assert props["a"]["description"] == "the first argument."
    assert props["b"]["description"] == "the second."


def test_numpy_docstring_gives_parameter_descriptions() -> None:
    @tool
    def f(a: int, b: int, c: int) -> int:
        """Sum three numbers.

        Parameters
        ----------
        a : int
            The first.
        b, c : int
            The others.

        Returns
        -------
        int
        """
        return a + b + c

    assert f.description == "Sum three numbers."
    props = f.spec.parameters["properties"]
    assert [props[n]["description"] for n in "abc"] == ["The first.", "The others.", "The others."]


def test_explicit_field_description_wins_over_the_docstring() -> None:
    @tool
    def f(n: Annotated[int, Field(ge=0, description="explicit")], m: int = Field(3, le=9)) -> int:
        """Numbers.

        Args:
            n: from the docstring.
            m: also from the docstring.
        """
        return n

    props = f.spec.parameters["properties"]
    assert props["n"] == {"type": "integer", "minimum": 0, "description": "explicit"}
    assert props["m"] == {"type": "integer", "maximum": 9, "default": 3,
                          "description": "also from the docstring."}  # fmt: skip
    with pytest.raises(ToolArgumentsError, match="field 'n'"):
        f.validate({"n": -1})


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


# -- decoration ---------------------------------------------------------------------------------


def test_decorated_functions_stay_callable() -> None:
    assert add(2, 3) == 5
    assert isinstance(add, Tool)
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two integers."


async def test_decorated_async_functions_stay_awaitable() -> None:
    order = Order(customer="ann", lines=[LineItem(sku="x")])
    result = await place_order(order, ToolContext(call_id="c9"), priority="high")
    assert result == "ann:1:high:red:None:c9"


def test_decorator_options_override_name_description_and_timeout() -> None:
    @tool(name="sum_up", description="Sums.", timeout=2.5, strict=False)
    def f(a: int) -> int:
        """Ignored docstring."""
        return a

    assert (f.name, f.description, f.timeout, f.strict) == ("sum_up", "Sums.", 2.5, False)
    assert f.spec.name == "sum_up"
    assert f(4) == 4


def test_tool_of_a_tool_is_the_same_tool_unless_options_change_it() -> None:
    assert tool(add) is add
    renamed = tool(add, name="plus")
    assert (renamed.name, add.name) == ("plus", "add")
    assert renamed(1, 1) == 2


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


def test_bad_names_are_rejected_at_decoration() -> None:
    with pytest.raises(ValueError, match="invalid tool name '<lambda>'"):
        tool(lambda: None)
    with pytest.raises(ValueError, match="invalid tool name 'has space'"):
        tool(add.fn, name="has space")
    assert tool(lambda: None, name="ok").name == "ok"


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


async def test_bound_call_injects_a_context_built_from_its_token() -> None:
    seen: list[ToolContext] = []

    @tool
    async def probe(x: int, context: ToolContext) -> int:
        seen.append(context)
        return x * 2

    token = CancelToken("call")
    deps = object()
    call = probe.bind(probe.validate('{"x": "21"}'), call_id="c1", turn=3, deps=deps)
    assert await call(token) == 42
    [ctx] = seen
    assert (ctx.token, ctx.call_id, ctx.tool_name, ctx.turn, ctx.deps) == (
        token,
        "c1",
        "probe",
        3,
        deps,
    )


def test_context_helpers_delegate_to_the_token() -> None:
    ctx = ToolContext()
    assert not ctx.cancelled
    assert ctx.cause is None
    ctx.raise_if_cancelled()
    ctx.token.cancel("stop")
    assert ctx.cancelled
    assert ctx.cause is not None
    assert ctx.cause.reason == "stop"
    with pytest.raises(Interrupted):
        ctx.raise_if_cancelled()


def test_context_is_frozen() -> None:
    ctx = ToolContext(call_id="c1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.call_id = "other"  # type: ignore[misc]


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


# -- rendering results --------------------------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("as is", "as is"),
        (None, ""),
        ({"a": [1, 2], "b": None}, '{"a":[1,2],"b":null}'),
        ([1, "two"], '[1,"two"]'),
        ((1, 2), "[1,2]"),
        (3, "3"),
        (1.5, "1.5"),
        (True, "true"),
        (LineItem(sku="s", quantity=2), '{"sku":"s","quantity":2}'),
        (Point(1, 2), '{"x":1,"y":2}'),
        (Color.BLUE, "blue"),
        (b"\x00\x01\x02", "<3 bytes of binary data>"),
        (bytearray(5), "<5 bytes of binary data>"),
    ],
)
def test_render_result(value: Any, expected: str) -> None:
    assert add.render_result(value) == expected


def test_render_result_never_raises() -> None:
    circular: list[Any] = []
    circular.append(circular)
    assert isinstance(add.render_result(circular), str)
    assert isinstance(add.render_result({"blob": b"\xff"}), str)
    assert "Unprintable" in add.render_result(Unprintable())


# -- execution ----------------------------------------------------------------------------------


def test_bound_async_tool_is_a_coroutine_function_and_sync_tool_is_not() -> None:
    async_call = place_order.bind({}, call_id="c1")
    sync_call = add.bind({"a": 1, "b": 2}, call_id="c2")
    assert inspect.iscoroutinefunction(async_call)
    assert not inspect.iscoroutinefunction(sync_call)
    assert sync_call(CancelToken()) == 3


async def test_sync_and_async_tools_run_in_a_concurrent_map() -> None:
    loop_thread = threading.get_ident()

    @tool
    def where() -> int:
        return threading.get_ident()

    order = Order(customer="bo", lines=[])
    runner: ConcurrentMap[Any] = ConcurrentMap(
        [
            where.bind({}, call_id="c1"),
            place_order.bind(place_order.validate({"order": order}), call_id="c2"),
        ]
    )
    outcomes = await runner.run()
    assert [o.status for o in outcomes] == ["ok", "ok"]
    assert outcomes[0].value != loop_thread  # the sync tool ran in a worker thread
    assert outcomes[1].value == "bo:0:low:red:None:c2"


def test_positional_only_parameters_are_passed_positionally() -> None:
    @tool
    def divide(a: int, b: int, /, ctx: ToolContext) -> str:
        return f"{a // b}:{ctx.call_id}"

    call = divide.bind(divide.validate({"a": 7, "b": 2}), call_id="c1")
    assert call(CancelToken()) == "3:c1"

    @tool
    def tag(ctx: ToolContext, label: str, /) -> str:
        return f"{ctx.call_id}:{label}"

    assert tag.bind(tag.validate({"label": "x"}), call_id="c2")(CancelToken()) == "c2:x"


async def test_timeout_cancels_the_call_token_with_a_deadline_cause() -> None:
    @tool(timeout=0.05)
    async def slow(ctx: ToolContext) -> str:
        collected = "partial"
        cause = await ctx.token.wait()
        return f"{collected} ({cause.kind}: {cause.reason})"

    runner: ConcurrentMap[str] = ConcurrentMap([slow.bind({}, call_id="c1")], grace=30)
    start = time.monotonic()
    with anyio.fail_after(10):
        [outcome] = await runner.run()
    assert time.monotonic() - start < 5  # ended by its token, not by the map's grace
    assert outcome.status == "interrupted"
    assert outcome.value == "partial (deadline: tool slow timed out after 0.05s)"
    assert outcome.token is not None
    assert outcome.token.cause is not None
    assert outcome.token.cause.kind == "deadline"
    assert runner.cause is None  # only this call timed out; the group was not cancelled


async def test_sync_tool_timeout_cancels_its_token_too() -> None:
    @tool(timeout=0.05)
    def polling(ctx: ToolContext) -> str:
        while not ctx.cancelled:
            time.sleep(0.005)
        assert ctx.cause is not None
        return f"stopped by {ctx.cause.kind}"

    runner: ConcurrentMap[str] = ConcurrentMap([polling.bind({}, call_id="c1")], grace=30)
    with anyio.fail_after(10):
        [outcome] = await runner.run()
    assert (outcome.status, outcome.value) == ("interrupted", "stopped by deadline")


async def test_timeout_is_disarmed_when_the_tool_returns_in_time() -> None:
    @tool(timeout=0.05)
    async def quick() -> str:
        return "done"

    token = CancelToken()
    assert await quick.bind({}, call_id="c1")(token) == "done"
    await anyio.sleep(0.15)
    assert not token.cancelled


async def test_async_tool_ignoring_its_timeout_is_cancelled_hard_after_the_maps_grace() -> None:
    @tool(timeout=0.05)
    async def stubborn() -> str:
        await anyio.sleep(30)
        return "never"

    runner: ConcurrentMap[str] = ConcurrentMap([stubborn.bind({}, call_id="c1")], grace=0.05)
    start = time.monotonic()
    with anyio.fail_after(10):
        [outcome] = await runner.run()
    assert time.monotonic() - start < 5
    assert outcome.status == "cancelled"
    assert outcome.value is None
    assert outcome.token is not None
    assert outcome.token.cause is not None
    assert outcome.token.cause.kind == "deadline"


async def test_sync_tool_ignoring_its_timeout_is_abandoned_after_the_maps_grace() -> None:
    release = threading.Event()

    @tool(timeout=0.05)
    def stuck() -> str:
        release.wait(10)
        return "too late"

    runner: ConcurrentMap[str] = ConcurrentMap([stuck.bind({}, call_id="c1")], grace=0.05)
    try:
        with anyio.fail_after(5):
            [outcome] = await runner.run()
    finally:
        release.set()
    assert (outcome.status, outcome.value) == ("abandoned", None)
    assert outcome.token is not None
    assert outcome.token.cause is not None
    assert outcome.token.cause.kind == "deadline"


async def test_only_the_maps_grace_decides_when_a_timed_out_tool_is_stopped_hard() -> None:
    @tool(timeout=0.01)
    async def winding_down(ctx: ToolContext) -> str:
        await ctx.token.wait()
        await anyio.sleep(0.2)  # winding down, well within the map's grace
        return "partial"

    # A grace given to bind (as the worker does) is no second, shorter hard stop.
    call = winding_down.bind({}, call_id="c1", grace=0.01)
    runner: ConcurrentMap[str] = ConcurrentMap([call], grace=30)
    with anyio.fail_after(10):
        [outcome] = await runner.run()

    assert (outcome.status, outcome.value) == ("interrupted", "partial")


async def test_sync_tool_sees_its_token_cancelled_from_the_loop() -> None:
    started = threading.Event()
    tool_thread: list[int] = []

    @tool
    def poll(ctx: ToolContext) -> str:
        tool_thread.append(threading.get_ident())
        started.set()
        while not ctx.cancelled:
            time.sleep(0.005)
        assert ctx.cause is not None
        return f"stopped: {ctx.cause.kind}"

    runner: ConcurrentMap[str] = ConcurrentMap([poll.bind({}, call_id="c1")], grace=30)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(runner.run)
            assert await anyio.to_thread.run_sync(started.wait, 5)
            runner.group_token.cancel("stop pressed")
    [outcome] = runner.outcomes
    assert (outcome.status, outcome.value) == ("interrupted", "stopped: parent")
    assert tool_thread != [threading.get_ident()]


async def test_tool_that_raises_interrupted_ends_as_cancelled() -> None:
    @tool
    async def obedient(ctx: ToolContext) -> str:
        await ctx.token.wait()
        ctx.raise_if_cancelled()
        return "unreachable"

    runner: ConcurrentMap[str] = ConcurrentMap([obedient.bind({}, call_id="c1")], grace=30)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(runner.run)
            await anyio.sleep(0.01)
            runner.group_token.cancel("stop")
    assert runner.outcomes[0].status == "cancelled"


# -- toolsets -----------------------------------------------------------------------------------


def test_toolset_accepts_tools_and_plain_functions() -> None:
    def shout(text: str) -> str:
        """Shout."""
        return text.upper()

    tools = Toolset([add, shout, place_order])
    assert tools.names == ["add", "shout", "place_order"]
    assert len(tools) == 3
    assert [t.name for t in tools] == tools.names
    assert tools.get("add") is add
    shout_tool = tools.get("shout")
    assert isinstance(shout_tool, Tool)
    assert shout_tool("hey") == "HEY"
    assert tools.get("missing") is None
    assert "shout" in tools
    assert tools["add"] is add
    assert [s.name for s in tools.specs()] == tools.names
    assert tools.specs()[1].description == "Shout."


def test_toolset_rejects_duplicate_names() -> None:
    def add(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="duplicate tool name 'add'"):
        Toolset([globals()["add"], add])
    assert Toolset([globals()["add"], tool(add, name="add_one")]).names == ["add", "add_one"]
