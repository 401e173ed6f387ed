"""Queries over the messages table. Functions take a connection and return dataclasses.

Everything that differs between database dialects stays in this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, desc, func, select
from sqlalchemy.dialects import postgresql, sqlite

from webhook_service.storage.tables import messages, messages_text_index
from webhook_service.timestamps import instant_key, utc_now_iso

TOP_SENDERS = 10
# The trigram index answers substrings of at least three characters; shorter ones scan.
TEXT_INDEX_MIN_CHARS = 3


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
    """One page of messages and the number of all messages matching the filter."""

    items: list[StoredMessage]
    total: int


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


def fold_text(text: str | None) -> str | None:
    """The form of a text that substring search compares: Unicode case-folded."""
    return None if text is None else text.casefold()


# Built once: constructing the statement per call cost more than SQLite's durable commit.
_INSERT_IF_NEW = {
    name: dialect_insert(messages)
    .on_conflict_do_nothing(index_elements=[messages.c.message_id])
    .returning(messages.c.message_id)
    for name, dialect_insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert))
}


def _row_values(message: NewMessage, created_at: str) -> dict:
    return {
        "message_id": message.message_id,
        "from_msisdn": message.sender,
        "to_msisdn": message.recipient,
        "ts": message.ts,
        "ts_instant": instant_key(message.ts),
        "text": message.text,
        "text_folded": fold_text(message.text),
        "created_at": created_at,
    }


def insert_messages_if_new(conn: Connection, batch: list[NewMessage]) -> list[bool]:
    """Insert each message unless its message_id is stored already; True where inserted.

    One statement, so concurrent deliveries of one id never conflict and the first commit
    wins; within the batch the earlier occurrence of an id wins.
    Raises sqlalchemy.exc.SQLAlchemyError when the database fails.
    """
    if not batch:
        return []
    created_at = utc_now_iso()
    rows = [_row_values(message, created_at) for message in batch]
    inserted = set(conn.execute(_INSERT_IF_NEW[conn.dialect.name], rows).scalars())
    results = []
    for message in batch:
        results.append(message.message_id in inserted)
        inserted.discard(message.message_id)
    return results


def _filter_conditions(conn: Connection, message_filter: MessageFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if message_filter.sender is not None:
        conditions.append(messages.c.from_msisdn == message_filter.sender)
    if message_filter.since is not None:
        conditions.append(messages.c.ts_instant >= instant_key(message_filter.since))
    if message_filter.text_contains is not None:
        conditions.append(_text_contains(conn, message_filter.text_contains))
    return conditions


def _text_contains(conn: Connection, needle: str) -> ColumnElement[bool]:
    folded = fold_text(needle)
    if conn.dialect.name == "sqlite" and len(folded) >= TEXT_INDEX_MIN_CHARS:
        # A quoted FTS5 phrase over a case-sensitive trigram index of the folded text is an
        # exact substring test; quoting makes operators and punctuation in the input literal.
        phrase = '"' + folded.replace('"', '""') + '"'
        matching_rows = select(messages_text_index.c.rowid).where(messages_text_index.c.text_folded.match(phrase))
        return messages.c.id.in_(matching_rows)
    # instr/strpos compare literally: % _ and \ need no escaping, and NULL text never matches.
    position = func.strpos if conn.dialect.name == "postgresql" else func.instr
    return position(messages.c.text_folded, folded) > 0


def list_messages(conn: Connection, message_filter: MessageFilter, limit: int, offset: int) -> MessagePage:
    """One page in (instant, message_id) order, with the total under the same filter.

    Run inside one transaction so that page and total come from the same snapshot.
    """
    conditions = _filter_conditions(conn, message_filter)
    total = conn.execute(select(func.count()).select_from(messages).where(*conditions)).scalar_one()
    rows = conn.execute(
        select(
            messages.c.message_id,
            messages.c.from_msisdn,
            messages.c.to_msisdn,
            messages.c.ts,
            messages.c.text,
            messages.c.created_at,
        )
        .where(*conditions)
        .order_by(messages.c.ts_instant, messages.c.message_id)
        .limit(limit)
        .offset(offset)
    )
    return MessagePage(items=[StoredMessage(*row) for row in rows], total=total)


def message_stats(conn: Connection) -> MessageStats:
    """Totals, the top senders (count descending, then sender ascending) and the time range."""
    total, senders = conn.execute(
        select(func.count(), func.count(messages.c.from_msisdn.distinct())).select_from(messages)
    ).one()
    count = func.count().label("count")
    top = conn.execute(
        select(messages.c.from_msisdn, count)
        .group_by(messages.c.from_msisdn)
        .order_by(desc(count), messages.c.from_msisdn)
        .limit(TOP_SENDERS)
    )
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
