"""`checked_duration`: the one check for every timeout, deadline and grace period."""

from __future__ import annotations

import decimal
import fractions
import math
from typing import Any

import pytest

from llm_worker.cancel import checked_duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (math.inf, None),
        (0, 0.0),
        (-0.0, 0.0),
        (2, 2.0),
        (0.25, 0.25),
        (fractions.Fraction(1, 4), 0.25),
        (1e300, 1e300),
        (10**400, None),  # beyond any float: it can never pass
    ],
)
def test_a_duration_is_seconds_as_a_float_or_none_for_no_limit(
    value: Any, expected: float | None
) -> None:
    result = checked_duration(value, "run timeout")

    assert result == expected
    assert result is None or type(result) is float


@pytest.mark.parametrize(
    ("value", "error", "shown"),
    [
        (math.nan, ValueError, "NaN"),
        (-1, ValueError, "-1"),
        (-0.5, ValueError, "-0.5"),
        (-math.inf, ValueError, "-inf"),
        (-(10**400), ValueError, "must not be negative"),
        (True, TypeError, "True"),
        (False, TypeError, "False"),
        ("5", TypeError, "'5'"),
        (decimal.Decimal("5"), TypeError, "Decimal('5')"),
        (complex(1, 0), TypeError, "(1+0j)"),
        ([5], TypeError, "[5]"),
    ],
)
def test_a_bad_duration_raises_naming_the_setting_and_the_value(
    value: Any, error: type[Exception], shown: str
) -> None:
    with pytest.raises(error) as raised:
        checked_duration(value, "run timeout")

    assert "run timeout" in str(raised.value)
    assert shown in str(raised.value)
