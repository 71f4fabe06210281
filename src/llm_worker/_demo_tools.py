"""The ``--tools demo`` set: small tools that show how tools run and how they stop.

* `slow_count` — async and cooperative: it counts one number per step and, when its token is
  cancelled (Ctrl-C, a timeout), stops at once and *returns* what it counted so far, so the
  partial output is kept and shown to the model.
* `get_weather` — sync (it runs in a worker thread) and instant: made-up, deterministic weather.
* `current_time` — sync: the current date and time, in UTC or at a fixed UTC offset.

They need no network and no key, so they work with the offline model. Ask it for them by name:
``"get_weather for Paris and slow_count to 5"``.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

import anyio
from pydantic import Field

from .tools import Tool, ToolContext, tool

__all__ = ["DEMO_TOOLS", "current_time", "get_weather", "slow_count"]

_CONDITIONS = ("sunny", "partly cloudy", "overcast", "light rain", "windy", "foggy", "snow")


@tool
async def slow_count(
    to: Annotated[int, Field(ge=1, le=1000)],
    ctx: ToolContext,
    step: Annotated[float, Field(ge=0, le=10)] = 0.5,
) -> str:
    """Count from 1 up to a number, slowly: one number per step.

    Args:
        to: The number to count up to.
        step: Seconds to wait before each number.
    """
    counted: list[str] = []
    for number in range(1, to + 1):
        with anyio.move_on_after(step):
            await ctx.token.wait()  # returns as soon as the call is cancelled
        if ctx.cancelled:
            done = " ".join(counted) or "nothing"
            return f"counted {done} of {to} before being stopped"
        counted.append(str(number))
    return " ".join(counted)


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city (made-up but consistent demo data).

    Args:
        city: The city name, e.g. "Paris".
    """
    seed = zlib.crc32(city.strip().lower().encode())
    temperature = seed % 35 - 5
    condition = _CONDITIONS[(seed >> 8) % len(_CONDITIONS)]
    return f"{city.strip() or 'Somewhere'}: {temperature} °C, {condition}"


@tool
def current_time(utc_offset_hours: Annotated[float, Field(ge=-14, le=14)] = 0) -> str:
    """Get the current date and time.

    Args:
        utc_offset_hours: Hours east of UTC (0 for UTC, -5 for New York in winter).
    """
    zone = UTC if not utc_offset_hours else timezone(timedelta(hours=utc_offset_hours))
    return datetime.now(zone).isoformat(timespec="seconds")


DEMO_TOOLS: tuple[Tool[..., Any], ...] = (get_weather, slow_count, current_time)
