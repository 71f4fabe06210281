"""Checking durations (timeouts, deadlines, grace periods) where they are accepted.

Invariants:
* Every duration the package accepts goes through `checked_duration` at the call that accepts it,
  so a bad value fails there, in the caller's stack, and never reaches a timer, a shared thread or
  another run.
* What comes out is either None ("no limit") or a finite float >= 0, so it can be added to
  ``time.monotonic()``, compared and formatted with ``%g`` without surprises.
"""

from __future__ import annotations

import math
import numbers


def checked_duration(value: float | None, what: str) -> float | None:
    """Return ``value`` as seconds, or None for "no limit"; raise at once if it is not a duration.

    ``None`` and ``+inf`` mean no limit (None). ``0`` is allowed: already expired. A finite value
    of any size is kept (one too large to ever pass simply never fires); an integer too large for
    a float is no limit. A negative number or NaN raises `ValueError`; anything that is not a real
    number (``bool``, a string, ``Decimal``) raises `TypeError`. ``what`` names the setting in the
    message, e.g. ``"run timeout"``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number of seconds (or None for no limit), got {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond the float range: positive ones never pass
        if value > 0:
            return None
        raise ValueError(f"{what} must not be negative, got {value!r}") from None
    if math.isnan(seconds):
        raise ValueError(f"{what} must be a number of seconds, got NaN")
    if seconds < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    if math.isinf(seconds):
        return None
    return seconds
