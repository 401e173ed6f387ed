"""How many texts hold each folded substring of one to three characters (four on PostgreSQL),
kept with the writes.

A needle of one or two characters is in no trigram index, and a short needle that is common
is in so many texts that counting them means reading every text. text_grams holds, for every
substring of one to three characters of a stored folded text, how many texts hold it, and
text_four_grams the same for four characters where the dialect counts them
(`Dialect.longest_counted_gram`); both change with every insert and purge, like
sender_counts. So the count of a needle that short is one row, and a short needle in no text
is known to be absent without reading a text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from operator import add

from sqlalchemy import Connection, select

from webhook_service.storage.dialects import Dialect, dialect_of
from webhook_service.storage.read_model.kept_counts import KeptCounts
from webhook_service.storage.read_model.senders import total_messages_value
from webhook_service.storage.tables import text_four_grams, text_grams

GRAM_LENGTHS = (1, 2, 3)
FOUR_GRAM_CHARS = 4


def grams_of(folded: str) -> set[str]:
    """Every distinct substring of one to three characters of `folded`."""
    # map over shifted copies: the loops run in C (about half the time of slicing in Python).
    pairs = list(map(add, folded, folded[1:]))
    return {*folded, *pairs, *map(add, pairs, folded[2:])}


def four_grams_of(folded: str) -> set[str]:
    """Every distinct substring of four characters of `folded`."""
    pairs = list(map(add, folded, folded[1:]))
    return set(map(add, pairs, pairs[2:]))


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


def _four_grams_of_row(row: dict) -> set[str]:
    folded = row["text_folded"]
    return four_grams_of(folded) if folded else set()


def _four_counted(dialect: Dialect) -> bool:
    return dialect.longest_counted_gram >= FOUR_GRAM_CHARS


GRAMS = KeptCounts("text_grams", (text_grams.c.gram,), text_grams.c.texts, _grams_of_row)
# Kept only where the dialect counts grams of four characters.
FOUR_GRAMS = KeptCounts(
    "text_four_grams", (text_four_grams.c.gram,), text_four_grams.c.texts, _four_grams_of_row, kept_on=_four_counted
)


def texts_holding(conn: Connection, gram: str) -> tuple[int, int]:
    """How many stored texts hold `gram` (folded, one to `longest_counted_gram` characters),
    and how many messages are stored: one statement."""
    dialect = dialect_of(conn)
    kept = FOUR_GRAMS if len(gram) == FOUR_GRAM_CHARS else GRAMS
    count, messages_stored = conn.execute(select(kept.value(dialect, gram), total_messages_value(dialect))).one()
    return int(count), int(messages_stored)
