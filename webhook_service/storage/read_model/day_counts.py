"""Messages counted by the UTC day of their ts, kept with the writes.

`since` filters on the ts instant, and at millions of messages counting those after it
reads that many index entries. instant_day_counts holds the number of messages per day of
ts_instant (its first ten characters), changed with every insert and purge like
sender_counts, so the count after `since` is the whole days that follow since's day
(one row each) plus the messages of since's own day after it (one day's index entries).
"""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.read_model.kept_counts import KeptCounts
from webhook_service.storage.tables import instant_day_counts, messages

# An instant key is YYYY-MM-DDTHH:MM:SS.fffffffffZ: its first ten characters name the day,
# and every key of a day sorts before the day followed by "U" (the eleventh is always "T").
_DAY_CHARS = 10
_PAST_DAY = "U"
# Every key of a day before noon sorts before the day followed by this.
_MIDDAY = "T12"
# Sorts after every instant key (they start with a digit): a lower bound no message meets.
PAST_EVERY_INSTANT = "~"


def day_of(instant: str) -> str:
    """The day (YYYY-MM-DD) of an instant key."""
    return instant[:_DAY_CHARS]


DAYS = KeptCounts(
    "instant_day_counts",
    (instant_day_counts.c.day,),
    instant_day_counts.c.message_count,
    lambda row: (day_of(row["ts_instant"]),),
)


def count_since(conn: Connection, since_key: str) -> int:
    """How many messages have an instant at or after `since_key` (an instant key): the day
    counts, and the index entries of the shorter side of since's day. A morning `since`
    counts its day whole and takes away what came before it; a later one adds what follows."""
    day, dialect = day_of(since_key), dialect_of(conn)
    entries = select(func.count()).select_from(messages)
    if since_key < day + _MIDDAY:
        whole_days = _sum_of(DAYS.entries(dialect, (), lambda key: key >= day))
        before = entries.where(messages.c.ts_instant >= day, messages.c.ts_instant < since_key).scalar_subquery()
        counted = whole_days - before
    else:
        later_days = _sum_of(DAYS.entries(dialect, (), lambda key: key > day))
        after = entries.where(messages.c.ts_instant >= since_key, messages.c.ts_instant < day + _PAST_DAY)
        counted = later_days + after.scalar_subquery()
    # One statement: one round trip to a database server.
    return int(conn.execute(select(counted)).scalar_one())


def skip_to_day(conn: Connection, since_key: str | None, offset: int) -> tuple[str, int]:
    """Where the message `offset` places after `since_key` (or the first message) is: a
    lower bound for ts_instant (its day, or `since_key` when it is on since's day) and how
    many messages from that bound on remain to be skipped. The page query then skips at
    most one day's messages instead of `offset`. Past the last message: PAST_EVERY_INSTANT."""
    first_day = None if since_key is None else day_of(since_key)
    skipped = 0  # messages before the day being looked at
    if since_key is not None:
        skipped = conn.execute(
            select(func.count())
            .select_from(messages)
            .where(messages.c.ts_instant >= since_key, messages.c.ts_instant < first_day + _PAST_DAY)
        ).scalar_one()
        if offset < skipped:
            return since_key, offset
    later = () if first_day is None else (lambda key: key > first_day,)
    for day, count in conn.execute(DAYS.entries(dialect_of(conn), (), *later)):
        if offset < skipped + count:
            return day, offset - skipped
        skipped += count
    return PAST_EVERY_INSTANT, 0


def _sum_of(entries):
    counts = entries.subquery()
    return select(func.coalesce(func.sum(counts.c.n), 0)).scalar_subquery()
