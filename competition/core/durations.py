"""Durations a user writes: seconds as a number, or a number with `s`, `m` or `h` (`90s`, `20m`,
`1.5h`), as train.time_limit and auto's --time-budget take them."""
from __future__ import annotations

import math
import re

from competition.core.errors import CompetitionError

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: float | int | str, what: str) -> float:
    """Seconds in `value`; a one-line error naming `what` (a config key, an option) when it is none."""
    text = str(value).strip().lower()
    found = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)", text)
    seconds = float(found.group(1)) * UNITS[found.group(2) or "s"] if found else math.nan
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds <= 0:
        raise CompetitionError(f"{what}: {value!r} is not a duration; give seconds (90) or a number with s, m or h "
                               f"(90s, 20m, 2h), above 0")
    return seconds


def format_duration(seconds: float) -> str:
    """`0.3s`, `45s`, `12m05s`, `2h03m`: how long something took or has left, for a person (a limit of
    0.3 s shows as 0.3s, not 0s)."""
    if 0 < seconds < 59.95:
        return f"{round(seconds, 1):g}s"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
