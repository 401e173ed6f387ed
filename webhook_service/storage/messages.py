"""Storing, deleting and paging messages, written once for every database.

Functions take a connection and return dataclasses; what they store or delete they tell the
read model (storage/read_model/), which keeps every count; what differs between databases
they ask of the connection's dialect (storage/dialects/).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import ColumnElement, Connection, delete, func, select, tuple_

from webhook_service.storage.cursor import Position
from webhook_service.storage.dialects import Dialect, dialect_of
from webhook_service.storage.dialects.search import SearchPlan
from webhook_service.storage.read_model import record_deleted, record_inserted
from webhook_service.storage.read_model.day_counts import count_since, skip_to_day
from webhook_service.storage.read_model.search import plan_search
from webhook_service.storage.read_model.senders import sender_messages, senders_summary, total_messages
from webhook_service.storage.read_model.text_totals import count_holding
from webhook_service.storage.tables import messages
from webhook_service.timestamps import instant_key, utc_now_iso

TOP_SENDERS = 10
# What the read model needs of a deleted message to uncount it (record_deleted).
_COUNTED_COLUMNS = (messages.c.from_msisdn, messages.c.created_at, messages.c.text_folded, messages.c.ts_instant)
# From this deep on, an offset page without `from`, `q` or a cursor first skips whole days
# by the day counts, then at most one day's messages.
SKIP_BY_DAYS_FROM_OFFSET = 10_000
# The trigram tokenizer ends a text at a NUL, and PostgreSQL text cannot hold one: folded
# text (and a folded needle) holds U+24B6 CIRCLED LATIN CAPITAL LETTER A in its place, a
# character that case folding never leaves in a text (it folds to U+24D0), so a NUL matches
# a NUL only, and every character a client can send still matches only itself.
FOLDED_NUL = "\u24b6"


@dataclass(frozen=True)
class NewMessage:
    """A validated delivery, before it is stored."""

    message_id: str
    sender: str
    recipient: str
    ts: str
    text: str | None


@dataclass(frozen=True)
class StoredMessage:
    """A message as stored, with its ingestion time."""

    message_id: str
    sender: str
    recipient: str
    ts: str
    text: str | None
    created_at: str


@dataclass(frozen=True)
class MessageFilter:
    """Filters that combine with AND; None means not filtered."""

    sender: str | None = None
    since: str | None = None
    text_contains: str | None = None


@dataclass(frozen=True)
class MessagePage:
    """One page of messages, the number of all messages matching the filter, and where the
    page ended when more messages follow it (None on the last page)."""

    items: list[StoredMessage]
    total: int
    next_position: Position | None


@dataclass(frozen=True)
class SenderCount:
    """How many messages one sender has sent."""

    sender: str
    count: int


@dataclass(frozen=True)
class MessageStats:
    """Aggregates over all stored messages."""

    total_messages: int
    senders_count: int
    top_senders: list[SenderCount]
    first_message_ts: str | None
    last_message_ts: str | None


def message_document(message: StoredMessage) -> dict:
    """A stored message in the API's field names, the one shape a message has outside the
    database (GET /messages and /feed, forwarded deliveries, export, archives): what the API's
    MessageSchema dumps, built directly (a page of 50 took 1.7 ms through marshmallow; a test
    holds the two to one output)."""
    return {
        "message_id": message.message_id,
        "from": message.sender,
        "to": message.recipient,
        "ts": message.ts,
        "text": message.text,
        "created_at": message.created_at,
    }


def fold_text(text: str | None) -> str | None:
    """The form of a text that substring search compares: Unicode case-folded, NUL as U+24B6."""
    return None if text is None else text.casefold().replace("\x00", FOLDED_NUL)


def message_row(dialect: Dialect, message: NewMessage, position: int, created_at: str) -> dict:
    """The messages table's columns for `message` at feed `position`, received at `created_at`."""
    return {
        "id": position,
        "message_id": dialect.to_column(message.message_id),
        "from_msisdn": message.sender,
        "to_msisdn": message.recipient,
        "ts": message.ts,
        "ts_instant": instant_key(message.ts),
        "text": None if message.text is None else dialect.to_column(message.text),
        "text_folded": fold_text(message.text),
        "created_at": created_at,
    }


def insert_messages_if_new(conn: Connection, batch: list[NewMessage]) -> list[bool]:
    """Insert each message unless its message_id is stored already; True where inserted.

    One statement, so concurrent deliveries of one id never conflict and the first commit
    wins; within the batch the earlier occurrence of an id wins. Each message takes the
    next feed position in batch order (a duplicate leaves its position unused). Rows go
    in message_id order, so that two transactions inserting overlapping ids lock them in
    the same order. The read model counts what was stored, in the same transaction.
    Raises sqlalchemy.exc.SQLAlchemyError when the database fails.
    """
    created_at = utc_now_iso()
    return _insert_rows_if_new(conn, [message_row(dialect_of(conn), message, 0, created_at) for message in batch])


def insert_stored_if_new(conn: Connection, batch: list[StoredMessage]) -> list[bool]:
    """As insert_messages_if_new, keeping each message's created_at (messages stored before,
    from an export or an archive): they take new feed positions, so the feed hands them out
    as newly stored."""
    dialect = dialect_of(conn)
    return _insert_rows_if_new(
        conn,
        [
            message_row(dialect, NewMessage(m.message_id, m.sender, m.recipient, m.ts, m.text), 0, m.created_at)
            for m in batch
        ],
    )


def _insert_rows_if_new(conn: Connection, rows: list[dict]) -> list[bool]:
    if not rows:
        return []
    dialect = dialect_of(conn)
    last_position = dialect.reserve_positions(conn, len(rows))
    for offset, row in enumerate(rows, 1):
        row["id"] = last_position + offset
    # sorted() is stable: of two deliveries of one id, the earlier still comes first.
    inserted = dialect.insert_if_new(conn, sorted(rows, key=_by_message_id))
    results, stored = [], []
    for row in rows:
        results.append(row["message_id"] in inserted)
        if results[-1]:
            stored.append(row)
        inserted.discard(row["message_id"])
    record_inserted(conn, stored)
    return results


def _by_message_id(row: dict) -> str:
    return row["message_id"]


def count_messages_before(conn: Connection, before: str) -> int:
    """How many messages have a ts instant before `before` (a ts)."""
    return conn.execute(
        select(func.count()).select_from(messages).where(messages.c.ts_instant < instant_key(before))
    ).scalar_one()


def delete_messages_before(conn: Connection, before: str, limit: int) -> int:
    """Delete up to `limit` messages whose ts instant is before `before` (a ts), oldest first,
    keeping the counts exact; returns how many. Raises SQLAlchemyError."""
    oldest = (
        select(messages.c.id)
        .where(messages.c.ts_instant < instant_key(before))
        .order_by(messages.c.ts_instant, messages.c.message_id)
        .limit(limit)
    )
    return delete_counted(conn, messages.c.id.in_(oldest.scalar_subquery()))


def delete_counted(conn: Connection, *conditions: ColumnElement[bool]) -> int:
    """Delete the messages that meet `conditions`, keeping the counts exact; returns how many.
    The counts change by what this statement deleted, exactly (a concurrent purge may have
    taken some first). Raises SQLAlchemyError."""
    result = conn.execute(delete(messages).where(*conditions).returning(*_COUNTED_COLUMNS))
    keys = tuple(result.keys())
    rows = [dict(zip(keys, row, strict=True)) for row in result.all()]
    record_deleted(conn, rows)
    return len(rows)


def _filter_conditions(
    dialect: Dialect, message_filter: MessageFilter, search: SearchPlan | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if message_filter.sender is not None:
        conditions.append(messages.c.from_msisdn == dialect.to_column(message_filter.sender))
    if message_filter.since is not None:
        conditions.append(messages.c.ts_instant >= instant_key(message_filter.since))
    if search is not None:
        conditions.extend(search.conditions)
    return conditions


def _count_matching(
    conn: Connection, dialect: Dialect, message_filter: MessageFilter, conditions: list, search: SearchPlan | None
) -> int:
    # Without filters, or with `from` alone or `since` alone, the counters kept with the
    # writes answer; with `q` alone, the gram counts or the text index know.
    only_sender = message_filter.since is None and search is None
    if only_sender and message_filter.sender is None:
        return total_messages(conn)
    if only_sender:
        return sender_messages(conn, dialect.to_column(message_filter.sender))
    only_text = message_filter.sender is None and message_filter.since is None
    if only_text and search.known_count is not None:
        return search.known_count
    if only_text and search.remember_as is not None:
        return count_holding(conn, search.remember_as, conditions)
    if message_filter.sender is None and search is None:
        return count_since(conn, instant_key(message_filter.since))
    by_sender_text = message_filter.sender is not None and search is not None
    return dialect.count_messages(conn, conditions, by_sender_text=by_sender_text)


# The columns stored_message reads.
PAGE_COLUMNS = (
    messages.c.message_id,
    messages.c.from_msisdn,
    messages.c.to_msisdn,
    messages.c.ts,
    messages.c.text,
    messages.c.created_at,
)


def stored_message(dialect: Dialect, row) -> StoredMessage:
    """A row of the page columns as the message that was sent."""
    return StoredMessage(
        message_id=dialect.from_column(row.message_id),
        sender=row.from_msisdn,
        recipient=row.to_msisdn,
        ts=row.ts,
        text=None if row.text is None else dialect.from_column(row.text),
        created_at=row.created_at,
    )


def list_messages(
    conn: Connection,
    message_filter: MessageFilter,
    limit: int,
    offset: int = 0,
    after: Position | None = None,
    with_total: bool = True,
) -> MessagePage:
    """One page in (instant, message_id) order: `offset` messages in, or after the position
    `after` (keyset paging, as fast deep in the order as at its start), with the total under
    the same filter (-1 without `with_total`: a walk over every page counts once). Run
    inside one transaction, so that page and total share a snapshot.
    """
    dialect = dialect_of(conn)
    needle = fold_text(message_filter.text_contains)
    alone = message_filter.sender is None and message_filter.since is None
    search = None if needle is None else plan_search(conn, needle, alone)
    conditions = _filter_conditions(dialect, message_filter, search)
    total = _count_matching(conn, dialect, message_filter, conditions, search) if with_total else -1
    page_conditions = list(conditions)
    since_key = None if message_filter.since is None else instant_key(message_filter.since)
    if after is not None and (since_key is None or after.instant >= since_key):
        # One lower bound on the order, not two: an index scan starts at one of them and
        # reads every entry up to the other (PostgreSQL: a week of entries for a cursor a week
        # before `since`). A cursor at or after `since` implies it; one before it is implied.
        if since_key is not None:
            page_conditions = _filter_conditions(dialect, replace(message_filter, since=None), search)
        page_conditions.append(
            tuple_(messages.c.ts_instant, messages.c.message_id)
            > tuple_(after.instant, dialect.to_column(after.message_id))
        )
    order = (messages.c.ts_instant, messages.c.message_id)
    if offset >= SKIP_BY_DAYS_FROM_OFFSET and message_filter.sender is None and search is None and after is None:
        start, offset = skip_to_day(conn, since_key, offset)
        page_conditions.append(messages.c.ts_instant >= start)
    if offset:
        # The rows skipped are found in the order's index alone (an index-only scan where the
        # database has one); only the page's own rows are read whole.
        page_keys = (
            select(messages.c.message_id).where(*page_conditions).order_by(*order).limit(limit + 1).offset(offset)
        )
        page_conditions = [messages.c.message_id.in_(page_keys.scalar_subquery())]
    rows = conn.execute(
        select(*PAGE_COLUMNS, messages.c.ts_instant).where(*page_conditions).order_by(*order).limit(limit + 1)
    ).all()
    items = [stored_message(dialect, row) for row in rows[:limit]]
    next_position = Position(rows[limit - 1].ts_instant, items[limit - 1].message_id) if len(rows) > limit else None
    return MessagePage(items=items, total=total, next_position=next_position)


def message_stats(conn: Connection) -> MessageStats:
    """Totals, the top senders (count descending, then sender ascending) and the time range,
    from the counts kept with the writes and the instant index: no scan."""
    total, senders, top = senders_summary(conn, TOP_SENDERS)
    first = conn.execute(
        select(messages.c.ts).order_by(messages.c.ts_instant, messages.c.message_id).limit(1)
    ).scalar_one_or_none()
    last = conn.execute(
        select(messages.c.ts).order_by(messages.c.ts_instant.desc(), messages.c.message_id.desc()).limit(1)
    ).scalar_one_or_none()
    return MessageStats(
        total_messages=total,
        senders_count=senders,
        top_senders=[SenderCount(sender, n) for sender, n in top],
        first_message_ts=first,
        last_message_ts=last,
    )
