"""How many texts hold each folded substring of one to three characters, kept with the writes.

A needle of one or two characters is in no trigram index, and a short needle that is common
is in so many texts that counting them means reading every text. text_grams holds, for every
substring of one to three characters of a stored folded text, how many texts hold it; it
changes with every insert and purge, like sender_counts. So the count of a
needle of up to three characters is one row, and a short needle in no text is known to be
absent without reading a text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from operator import add

from sqlalchemy import Connection, select

from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.read_model.kept_counts import KeptCounts
from webhook_service.storage.read_model.senders import total_messages_value
from webhook_service.storage.tables import text_grams

GRAM_LENGTHS = (1, 2, 3)
LONGEST_GRAM = GRAM_LENGTHS[-1]


def grams_of(folded: str) -> set[str]:
    """Every distinct substring of one to three characters of `folded`."""
    # map over shifted copies: the loops run in C (about half the time of slicing in Python).
    pairs = list(map(add, folded, folded[1:]))
    return {*folded, *pairs, *map(add, pairs, folded[2:])}


def count_grams(folded_texts: Iterable[str | None]) -> Counter[str]:
    """In how many of the texts each gram occurs (a text counts once per gram)."""
    counts: Counter[str] = Counter()
    for folded in folded_texts:
        if folded:
            counts.update(grams_of(folded))
    return counts


def _grams_of_row(row: dict) -> set[str]:
    folded = row["text_folded"]
    return grams_of(folded) if folded else set()


GRAMS = KeptCounts("text_grams", (text_grams.c.gram,), text_grams.c.texts, _grams_of_row)


def texts_holding(conn: Connection, gram: str) -> tuple[int, int]:
    """How many stored texts hold `gram` (folded, one to three characters), and how many
    messages are stored: one statement."""
    dialect = dialect_of(conn)
    count, messages_stored = conn.execute(select(GRAMS.value(dialect, gram), total_messages_value(dialect))).one()
    return int(count), int(messages_stored)
