"""Ids and labels are text: `0007` is not `7` on a Kaggle leaderboard, and `01` is not `1`. The kit
reads them as the text a CSV holds and writes that text back; these helpers turn a value that
arrives otherwise (a number from the config, an older checkpoint or a caller's own frame) into
that text, and order classes the way a reader expects."""
from __future__ import annotations

import math
from typing import Any


def plain(value: Any) -> Any:
    """numpy scalar → Python scalar; integral floats → int (labels read as 0.0/1.0)."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def text_of(value: Any) -> str:
    """An id or label as text: text as it is; a number as its plain form (7, never np.int64(7) or 7.0)."""
    return value if isinstance(value, str) else str(plain(value))


def number_of(text: str) -> float | None:
    """The finite number a label's text spells, or None (`cat`, `True`, `nan`)."""
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def class_order(values) -> list[str]:
    """The distinct labels as text, sorted: by value when every one is a number (`2` before `10`, so a
    0/1 target's negative class comes first, as when numbers were read as numbers), else as text."""
    texts = {text_of(v) for v in values}
    numbers = {t: number_of(t) for t in texts}
    if all(n is not None for n in numbers.values()):
        return sorted(texts, key=lambda t: (numbers[t], t))
    return sorted(texts)
