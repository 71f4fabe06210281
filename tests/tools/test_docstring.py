"""Descriptions of a tool and its parameters from its docstring (tools/_docstring)."""

from typing import Annotated

import pytest
from pydantic import Field

from llm_worker.tools import ToolArgumentsError, tool

from ._helpers import place_order


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
