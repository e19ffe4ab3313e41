"""`data.image_pattern`: an image path built from a row's columns (`images/{image_id}.jpg`), parsed
without the image libraries, so checking a config loads none of them."""
from __future__ import annotations

import string

from competition.core.errors import CompetitionError


def pattern_fields(pattern: str, key: str) -> list[tuple[str, str | None]]:
    """(literal text, column or None) pieces of a data.image_pattern such as
    `images/{image_id}.jpg`; `{{` and `}}` stand for braces. Column values go in as they are
    written in the CSV: conversions and format specs (`{id:05d}`) are refused."""
    try:
        pieces = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise CompetitionError(f"config key {key}: {pattern!r} is not a pattern ({exc})") from None
    for _, field, spec, conversion in pieces:
        if field is not None and (spec or conversion or not field):
            raise CompetitionError(f"config key {key}: {pattern!r}: each {{…}} holds a column name and nothing else")
    if all(field is None for _, field, _, _ in pieces):
        raise CompetitionError(f"config key {key}: {pattern!r} names no column: write one as {{column}}")
    return [(text, field) for text, field, _, _ in pieces]
