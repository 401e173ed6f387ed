"""Messages counted by the UTC day of their ts, kept with the writes.

`since` filters on the ts instant, and at millions of messages counting those after it
reads that many index entries. instant_day_counts holds the number of messages per day of
ts_instant (its first ten characters), changed in the transaction of every insert and purge
like sender_counts, so the count after `since` is the whole days that follow since's day
(one row each) plus the messages of since's own day after it (one day's index entries).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from sqlalchemy import Connection, func, select

from webhook_service.storage.kept_counts import KeptCounts
from webhook_service.storage.tables import instant_day_counts, messages

# An instant key is YYYY-MM-DDTHH:MM:SS.fffffffffZ: its first ten characters name the day,
# and every key of a day sorts before the day followed by "U" (the eleventh is always "T").
_DAY_CHARS = 10
_PAST_DAY = "U"


def day_of(instant: str) -> str:
    """The day (YYYY-MM-DD) of an instant key."""
    return instant[:_DAY_CHARS]


_DAYS = KeptCounts(instant_day_counts.c.day, instant_day_counts.c.message_count)


def add_instants(conn: Connection, instants: Iterable[str]) -> None:
    """Count messages just inserted (their instant keys), in the caller's write transaction."""
    _DAYS.add(conn, Counter(day_of(instant) for instant in instants))


def remove_instants(conn: Connection, instants: Iterable[str]) -> None:
    """Uncount messages just deleted (their instant keys), in the caller's write transaction."""
    _DAYS.remove(conn, Counter(day_of(instant) for instant in instants))


def count_since(conn: Connection, since_key: str) -> int:
    """How many messages have an instant at or after `since_key` (an instant key)."""
    day = day_of(since_key)
    later_days = conn.execute(
        select(func.coalesce(func.sum(instant_day_counts.c.message_count), 0)).where(instant_day_counts.c.day > day)
    ).scalar_one()
    same_day = conn.execute(
        select(func.count())
        .select_from(messages)
        .where(messages.c.ts_instant >= since_key, messages.c.ts_instant < day + _PAST_DAY)
    ).scalar_one()
    return int(later_days) + same_day
