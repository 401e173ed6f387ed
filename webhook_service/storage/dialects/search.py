"""What every database's search plan shares: its answer's shape, and how many matching
texts a plan collects before it reads in page order instead."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import ColumnElement

# A needle held by more texts than this is found faster by reading messages in page order
# and testing each text (51 matches are a few thousand rows away) than by collecting every
# text that holds it first and sorting them.
COMMON_NEEDLE_TEXTS = 20_000
# Read in page order, a page is about 51 * messages / texts rows away, each row about three
# times the cost of collecting one match (SQLite, 1,000,000 messages): collecting first wins
# below sqrt(this * messages) texts. At 20,000 messages, `you` in 9,000 texts took 17.6 ms
# collected and 5.4 ms in page order.
ORDER_OVER_COLLECTING = 150


def most_collected(total: int) -> int:
    """How many matching texts a search plan collects first, at most, among `total`
    messages, before it reads in page order instead."""
    return min(COMMON_NEEDLE_TEXTS, math.isqrt(ORDER_OVER_COLLECTING * total))


@dataclass(frozen=True)
class SearchPlan:
    """How to find texts holding a folded needle: conditions that hold exactly for them, and
    how many texts match when an index already knows it (None: count the rows)."""

    conditions: list[ColumnElement[bool]]
    known_count: int | None = None
    # The folded needle, when it is the read's only filter and counting it tests many texts:
    # its total is remembered for a while (read_model/text_totals.py).
    remember_as: str | None = None
