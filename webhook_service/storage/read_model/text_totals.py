"""Exact totals of long needles that many texts hold, remembered for a while (PostgreSQL).

PostgreSQL's trigram index holds no positions: the total of a needle longer than the gram
counts go, held by many texts, is counted by testing every text that may hold it (`your otp
is ` in 125,621 of 1,000,000 texts: 117 ms), and a reader paging through its matches asks
for it again at every page. Such a total is remembered (table text_totals) as the count of
the messages below a feed position that hold the needle: no transaction adds a message
below it (every one that could have has ended), so a later read adds only the newer messages
that hold it, read by position. Deleting messages below it would make it wrong: every
transaction that deletes messages counts itself, like the message total (deferred on
PostgreSQL: no row every delete updates), and a total counted before is not used. A total
is used for REMEMBER_SECONDS at most, so that the newer messages a read tests stay few, and
is written after the read that counted it, in a short transaction of its own (the read is
read-only); if that write fails, the next read counts again.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, and_, delete, func, select

from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.engine import after_read
from webhook_service.storage.read_model.senders import deletions_value
from webhook_service.storage.tables import messages, text_totals

# How long a remembered total is used: the newer messages a read tests are those stored
# since (45,000 at 1,500 messages/s: read by position and tested in 10 ms on PostgreSQL).
REMEMBER_SECONDS = 30.0
# Longer needles are counted every time: few texts are long enough to hold one (the text
# length index finds them), and a key stays well within what a B-tree entry may hold.
LONGEST_REMEMBERED_CHARS = 256
_NOW = func.extract("epoch", func.now())


def count_holding(conn: Connection, needle: str, conditions: list[ColumnElement[bool]]) -> int:
    """How many messages hold the folded `needle` (`conditions`: its search plan's), in the
    caller's read transaction: a remembered total plus the newer messages holding it, or
    counted (and remembered once the read has ended)."""
    dialect = dialect_of(conn)
    if len(needle) > LONGEST_REMEMBERED_CHARS:
        return dialect.count_messages(conn, conditions, by_sender_text=False)
    deletions = deletions_value(dialect)
    remembered = conn.execute(
        select(text_totals.c.total, text_totals.c.counted_below).where(
            text_totals.c.needle == needle,
            text_totals.c.deletions == deletions,
            text_totals.c.counted_at > _NOW - REMEMBER_SECONDS,
        )
    ).first()
    if remembered is not None:
        # The bound as a parameter the planner sees: it reads the newer rows by position.
        newer = select(func.count()).where(
            messages.c.id >= remembered.counted_below, func.strpos(messages.c.text_folded, needle) > 0
        )
        return remembered.total + conn.execute(newer).scalar_one()
    below_horizon = and_(*dialect.feed_horizon())
    total, below, deletions_seen = conn.execute(
        select(func.count(), func.count().filter(below_horizon), deletions).where(*conditions)
    ).one()
    counted = {
        "needle": needle,
        "total": below,
        "counted_below": dialect.feed_end(conn) + 1,
        "deletions": deletions_seen,
    }
    after_read(conn, lambda write: _remember(write, counted))
    return total


def _remember(conn: Connection, counted: dict) -> None:
    # Losing it in a crash costs one count again: the commit does not wait for the disk.
    conn.execute(select(func.set_config("synchronous_commit", "off", True)))
    conn.execute(delete(text_totals).where(text_totals.c.counted_at <= _NOW - REMEMBER_SECONDS))
    insert = dialect_of(conn).insert(text_totals).values(**counted, counted_at=_NOW)
    replaced = {name: insert.excluded[name] for name in ("total", "counted_below", "deletions", "counted_at")}
    conn.execute(insert.on_conflict_do_update(index_elements=[text_totals.c.needle], set_=replaced))
