"""Durations as people write them in rule files: ``30m``, ``4h``, ``7d``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+$")
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
DURATION_PATTERN = r"^(\d+(\.\d+)?[smhdw])+$|^0$"


def parse_duration(value: Any) -> timedelta:
    """``30m``, ``4h``, ``7d``, ``1h30m``, ``90s``, ``2w`` or ``0`` -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (expected e.g. 30m, 4h, 7d)")
    if isinstance(value, int | float):
        if value == 0:
            return timedelta(0)
        raise ValueError(f"{value!r} has no unit (expected e.g. 30m, 4h, 7d)")
    if not isinstance(value, str) or not _DURATION_RE.match(value):
        if value == "0":
            return timedelta(0)
        raise ValueError(f"{value!r} is not a duration (expected e.g. 30m, 4h, 7d)")
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART_RE.findall(value))
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling: ``timedelta(minutes=90)`` -> ``1h30m``."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "integer", "enum": [0]},
            ],
            "description": "a duration: 30s, 30m, 4h, 7d, 2w, 1h30m, or 0",
        }
    ),
]
