"""How many texts hold each folded substring of one to three characters, kept with the writes.

A needle of one or two characters is in no trigram index, and a short needle that is common
is in so many texts that counting them means reading every text. text_grams holds, for every
substring of one to three characters of a stored folded text, how many texts hold it; it
changes in the transaction of every insert and purge, like sender_counts. So the count of a
needle of up to three characters is one row, and a short needle in no text is known to be
absent without reading a text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from operator import add

from sqlalchemy import Connection, select

from webhook_service.storage.kept_counts import KeptCounts
from webhook_service.storage.tables import message_totals, text_grams

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


_GRAMS = KeptCounts((text_grams.c.gram,), text_grams.c.texts)


def add_grams(conn: Connection, grams: Counter[str]) -> None:
    """Count the grams of texts just inserted (count_grams of them), in the caller's write
    transaction."""
    _GRAMS.add(conn, grams)


def remove_texts(conn: Connection, folded_texts: Iterable[str | None]) -> None:
    """Uncount the grams of texts just deleted, in the caller's write transaction."""
    _GRAMS.remove(conn, count_grams(folded_texts))


def texts_holding(conn: Connection, gram: str) -> tuple[int, int]:
    """How many stored texts hold `gram` (folded, one to three characters), and how many
    messages are stored: one statement."""
    texts = select(text_grams.c.texts).where(text_grams.c.gram == gram).scalar_subquery()
    total = select(message_totals.c.total_messages).where(message_totals.c.id == 1).scalar_subquery()
    count, messages_stored = conn.execute(select(texts, total)).one()
    return count or 0, messages_stored
