"""Messages counted by sender, and the totals: how many messages and how many senders.

sender_counts holds each sender's messages; message_totals.total_messages and senders_count
(the rows of sender_counts) sum them up. In place (one writer at a time) a write changes
them directly. Deferred, a write's changes carry the sender counts and the number of
messages; senders_count changes only when the folder creates or removes a sender's row,
and a read works out what the changes not folded yet do to it and to the top senders.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Connection, bindparam, delete, select, update

from webhook_service.storage.dialects import Dialect, dialect_of
from webhook_service.storage.read_model.kept_counts import KeptCounts
from webhook_service.storage.tables import message_totals, sender_counts

SENDERS = KeptCounts(
    "sender_counts", (sender_counts.c.from_msisdn,), sender_counts.c.message_count, lambda row: (row["from_msisdn"],)
)
# The deferred changes' counter of the message total: {"message_totals": {"total_messages": n}};
# a write that deletes messages also counts itself: {..., "deletions": 1}.
TOTALS = "message_totals"
TOTAL_KEY = "total_messages"
DELETIONS_KEY = "deletions"

ADD_TO_TOTALS = (
    update(message_totals)
    .where(message_totals.c.id == 1)
    .values(
        total_messages=message_totals.c.total_messages + bindparam("messages_added"),
        senders_count=message_totals.c.senders_count + bindparam("senders_added"),
        deletions=message_totals.c.deletions + bindparam("deletions_added"),
    )
)
_REMOVE_FROM_SENDER = (
    update(sender_counts)
    .where(sender_counts.c.from_msisdn == bindparam("sender"))
    .values(message_count=sender_counts.c.message_count - bindparam("n"))
)


def changes(senders: Counter[str], sign: int) -> dict[str, dict[str, int]]:
    """What storing (sign 1) or deleting (-1) messages of `senders` changes, deferred."""
    totals = {TOTAL_KEY: sign * sum(senders.values())}
    if sign < 0:
        totals[DELETIONS_KEY] = 1
    return {**SENDERS.changes(senders, sign), TOTALS: totals}


def add_in_place(conn: Connection, senders: Counter[str]) -> None:
    """Count messages just stored, by sender, in the caller's write transaction."""
    dialect_of(conn).add_to_counters(conn, senders)


def remove_in_place(conn: Connection, senders: Counter[str]) -> None:
    """Uncount messages just deleted, by sender, in the caller's write transaction."""
    conn.execute(_REMOVE_FROM_SENDER, [{"sender": sender, "n": senders[sender]} for sender in sorted(senders)])
    gone = conn.execute(
        delete(sender_counts)
        .where(sender_counts.c.from_msisdn.in_(list(senders)), sender_counts.c.message_count <= 0)
        .returning(sender_counts.c.from_msisdn)
    ).all()
    conn.execute(
        ADD_TO_TOTALS, {"messages_added": -sum(senders.values()), "senders_added": -len(gone), "deletions_added": 1}
    )


def fold(conn: Connection, by_counter: dict[str, dict[str, int]]) -> None:
    """Fold the senders' and the total's changes in (the folder's transaction)."""
    senders_added = 0
    if SENDERS.name in by_counter:
        created, removed = SENDERS.fold(conn, SENDERS.name, by_counter[SENDERS.name])
        senders_added = created - removed
    totals = by_counter.get(TOTALS, {})
    messages_added, deletions_added = totals.get(TOTAL_KEY, 0), totals.get(DELETIONS_KEY, 0)
    if messages_added or senders_added or deletions_added:
        conn.execute(
            ADD_TO_TOTALS,
            {"messages_added": messages_added, "senders_added": senders_added, "deletions_added": deletions_added},
        )


def total_messages_value(dialect: Dialect):
    """How many messages are stored, as a scalar SQL expression."""
    stored = select(message_totals.c.total_messages).where(message_totals.c.id == 1).scalar_subquery()
    if dialect.deferred is None:
        return stored
    return stored + dialect.deferred.pending_value(TOTALS, TOTAL_KEY)


def deletions_value(dialect: Dialect):
    """How many write transactions have deleted messages so far, as a scalar SQL expression:
    it changes exactly when messages were deleted (read_model/text_totals.py)."""
    stored = select(message_totals.c.deletions).where(message_totals.c.id == 1).scalar_subquery()
    if dialect.deferred is None:
        return stored
    return stored + dialect.deferred.pending_value(TOTALS, DELETIONS_KEY)


def total_messages(conn: Connection) -> int:
    """How many messages are stored."""
    return int(conn.execute(select(total_messages_value(dialect_of(conn)))).scalar_one())


def sender_messages(conn: Connection, sender: str) -> int:
    """How many messages `sender` (as stored) has sent."""
    return int(conn.execute(select(SENDERS.value(dialect_of(conn), sender))).scalar_one())


def senders_summary(conn: Connection, top: int) -> tuple[int, int, list[tuple[str, int]]]:
    """The message total, how many senders there are, and the `top` senders by count
    descending, then sender ascending."""
    dialect = dialect_of(conn)
    total_value = total_messages_value(dialect)
    total, senders = conn.execute(
        select(total_value, message_totals.c.senders_count).where(message_totals.c.id == 1)
    ).one()
    ranked = select(sender_counts.c.from_msisdn, sender_counts.c.message_count).order_by(
        sender_counts.c.message_count.desc(), sender_counts.c.from_msisdn
    )
    if dialect.deferred is None:
        return int(total), int(senders), [(sender, int(n)) for sender, n in conn.execute(ranked.limit(top))]
    # Senders the changes not folded yet do not touch keep their stored count: the best `top`
    # of them are among the stored top `top` + (how many it touches).
    pending = {row.key: int(row.n) for row in conn.execute(SENDERS.pending(dialect))}
    counts = {sender: int(n) for sender, n in conn.execute(ranked.limit(top + len(pending)))}
    stored = dict(counts)
    if pending:
        touched = select(sender_counts.c.from_msisdn, sender_counts.c.message_count).where(
            sender_counts.c.from_msisdn.in_(list(pending))
        )
        stored.update((sender, int(n)) for sender, n in conn.execute(touched))
    for sender, n in pending.items():
        before = stored.get(sender, 0)
        counts[sender] = before + n
        senders += (before <= 0 < before + n) - (before > 0 >= before + n)
    ranked_now = sorted(((sender, n) for sender, n in counts.items() if n > 0), key=lambda item: (-item[1], item[0]))
    return int(total), int(senders), ranked_now[:top]
