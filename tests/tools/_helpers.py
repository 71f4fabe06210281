"""Types and tools shared by the tools tests."""

import enum
from typing import Any, Literal

from hypothesis import strategies as st
from pydantic import BaseModel

from llm_worker.tools import Tool, ToolArgumentsError, ToolContext, tool

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
