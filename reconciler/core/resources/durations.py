"""Durations as users write them: "500ms", "10s", "10m", "2h", "1d", "1w", or sums such as "1h30m"."""
from __future__ import annotations

import functools
import re

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")

DURATION_HELP = 'write a number and a unit: ms, s, m, h, d or w, e.g. "30s", "10m", "2h", "1d" or "1h30m"'


@functools.lru_cache(maxsize=4096, typed=True)  # the same few spellings recur across a repository
def parse_duration(text: str | int | float) -> float:
    """Seconds in `text`; a bare number is seconds. Raises ValueError with a message a user can act on."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration; {DURATION_HELP}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"{text} is not a duration: it is negative")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration; {DURATION_HELP}")
    compact = text.strip().replace(" ", "")
    if not _WHOLE.match(compact):
        raise ValueError(f"'{text}' is not a duration; {DURATION_HELP}")
    return sum(float(number) * UNITS[unit] for number, unit in _PART.findall(compact))


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of `seconds` in one unit, e.g. 90 -> "90s", 7200 -> "2h"."""
    for unit in ("w", "d", "h", "m", "s"):
        size = UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds == 0:
        return "0s"
    millis = seconds * 1000
    return f"{int(millis)}ms" if millis == int(millis) else f"{seconds}s"
