"""Queries over the messages table. Functions take a connection and return dataclasses.

Everything that differs between database dialects stays in this module.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    bindparam,
    delete,
    false,
    func,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from webhook_service.storage.cursor import Position
from webhook_service.storage.tables import (
    message_totals,
    messages,
    messages_text_index,
    messages_text_vocabulary,
    sender_counts,
)
from webhook_service.timestamps import instant_key, utc_now_iso

TOP_SENDERS = 10
# The trigram index answers substrings of at least three characters; shorter ones scan.
TEXT_INDEX_MIN_CHARS = 3
# A needle whose rarest trigram is in more texts than this is found faster by reading
# messages in page order and testing each text than by collecting every candidate first.
COMMON_TRIGRAM_TEXTS = 20_000
# The trigram tokenizer ends a text at a NUL; folded text holds U+2400 (the symbol for
# NUL) in its place, and so does a folded needle, so both still match each other.
FOLDED_NUL = "\u2400"


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


# PostgreSQL text cannot hold NUL, which a JSON string may: in message_id and text it is
# stored escaped, NUL as U+0001 U+0001 and U+0001 as U+0001 U+0002. The escape keeps
# code point order (NUL and U+0001 still sort below every other character, in their own
# order), so ids order, compare and stay unique as on SQLite, which stores them as sent.
_ESCAPED = re.compile("\x01([\x01\x02])")


def _escape_nul(value: str) -> str:
    if "\x00" not in value and "\x01" not in value:
        return value
    return value.replace("\x01", "\x01\x02").replace("\x00", "\x01\x01")


def _unescape_nul(value: str) -> str:
    if "\x01" not in value:
        return value
    return _ESCAPED.sub(lambda match: "\x00" if match.group(1) == "\x01" else "\x01", value)


def _to_column(conn: Connection, value: str | None) -> str | None:
    """A string as the database stores it (escaped on PostgreSQL)."""
    if value is None or conn.dialect.name != "postgresql":
        return value
    return _escape_nul(value)


def fold_text(text: str | None) -> str | None:
    """The form of a text that substring search compares: Unicode case-folded, NUL as U+2400."""
    return None if text is None else text.casefold().replace("\x00", FOLDED_NUL)


# The INSERT construct with ON CONFLICT support, by dialect name.
DIALECT_INSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
# Built once: constructing the statement per call cost more than SQLite's durable commit.
_INSERT_IF_NEW = {
    name: dialect_insert(messages)
    .on_conflict_do_nothing(index_elements=[messages.c.message_id])
    .returning(messages.c.message_id)
    for name, dialect_insert in DIALECT_INSERT.items()
}
_SENDER = bindparam("sender")
_COUNT = bindparam("count")


def message_row(message: NewMessage, created_at: str, escape_nul: bool = False) -> dict:
    """The messages table's columns for `message`, received at `created_at` (`escape_nul`:
    the message_id and text in PostgreSQL's stored form)."""
    return {
        "message_id": _escape_nul(message.message_id) if escape_nul else message.message_id,
        "from_msisdn": message.sender,
        "to_msisdn": message.recipient,
        "ts": message.ts,
        "ts_instant": instant_key(message.ts),
        "text": _escape_nul(message.text) if escape_nul and message.text is not None else message.text,
        "text_folded": fold_text(message.text),
        "created_at": created_at,
    }


def insert_messages_if_new(conn: Connection, batch: list[NewMessage]) -> list[bool]:
    """Insert each message unless its message_id is stored already; True where inserted.

    One statement, so concurrent deliveries of one id never conflict and the first commit
    wins; within the batch the earlier occurrence of an id wins. Rows go in message_id
    order, so that two transactions inserting overlapping ids (two PostgreSQL hosts) lock
    them in the same order and never deadlock. The counters are updated in the same
    transaction: one upsert per sender of the batch, one update of the totals.
    Raises sqlalchemy.exc.SQLAlchemyError when the database fails.
    """
    if not batch:
        return []
    created_at = utc_now_iso()
    rows = [message_row(message, created_at, escape_nul=conn.dialect.name == "postgresql") for message in batch]
    # sorted() is stable: of two deliveries of one id, the earlier still comes first.
    in_id_order = sorted(rows, key=_by_message_id)
    if conn.dialect.name == "sqlite":
        inserted = _insert_if_new_sqlite(conn, in_id_order)
    else:
        inserted = set(conn.execute(_INSERT_IF_NEW[conn.dialect.name], in_id_order).scalars())
    results = []
    added: Counter[str] = Counter()
    for message, row in zip(batch, rows, strict=True):
        stored = row["message_id"] in inserted
        results.append(stored)
        if stored:
            added[message.sender] += 1
        inserted.discard(row["message_id"])
    if added:
        if conn.dialect.name == "sqlite":
            _add_to_counters_sqlite(conn, added)
        else:
            _add_to_counters(conn, added)
    return results


# The columns of an inserted row, in the order of the SQLite statement's placeholders.
_ROW_COLUMNS = ("message_id", "from_msisdn", "to_msisdn", "ts", "ts_instant", "text", "text_folded", "created_at")
_SQLITE_INSERT_PREFIX = f"INSERT INTO messages ({', '.join(_ROW_COLUMNS)}) VALUES "
_SQLITE_ROW_PLACEHOLDERS = "(" + ", ".join("?" * len(_ROW_COLUMNS)) + ")"
_SQLITE_INSERT_SUFFIX = " ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
_sqlite_insert_statements: dict[int, str] = {}


def _sqlite_insert_statement(rows: int) -> str:
    """One INSERT of `rows` rows of placeholders (the same text for every batch of that size)."""
    statement = _sqlite_insert_statements.get(rows)
    if statement is None:
        statement = _SQLITE_INSERT_PREFIX + ", ".join([_SQLITE_ROW_PLACEHOLDERS] * rows) + _SQLITE_INSERT_SUFFIX
        _sqlite_insert_statements[rows] = statement
    return statement


def _insert_if_new_sqlite(conn: Connection, rows: list[dict]) -> set[str]:
    # The batch's one statement on the driver's connection: it runs inside the serialized
    # write transaction, where SQLAlchemy's per-row work cost more than SQLite's (as for the
    # counters below). Only placeholders vary with the batch size; values are parameters.
    parameters = [row[column] for row in rows for column in _ROW_COLUMNS]
    driver = conn.connection.driver_connection
    return {message_id for (message_id,) in driver.execute(_sqlite_insert_statement(len(rows)), parameters)}


def _by_message_id(row: dict) -> str:
    return row["message_id"]


def count_messages_before(conn: Connection, before: str) -> int:
    """How many messages have a ts instant before `before` (a ts)."""
    return conn.execute(
        select(func.count()).select_from(messages).where(messages.c.ts_instant < instant_key(before))
    ).scalar_one()


def delete_messages_before(conn: Connection, before: str, limit: int) -> int:
    """Delete up to `limit` messages whose ts instant is before `before` (a ts), oldest first,
    keeping the counters exact; returns how many. Raises SQLAlchemyError."""
    oldest = (
        select(messages.c.id)
        .where(messages.c.ts_instant < instant_key(before))
        .order_by(messages.c.ts_instant, messages.c.message_id)
        .limit(limit)
    )
    # What this statement deleted, exactly: a concurrent purge may have taken some first.
    rows = conn.execute(
        delete(messages).where(messages.c.id.in_(oldest.scalar_subquery())).returning(messages.c.from_msisdn)
    ).all()
    if not rows:
        return 0
    removed = Counter(row.from_msisdn for row in rows)
    conn.execute(
        update(sender_counts)
        .where(sender_counts.c.from_msisdn == _SENDER)
        .values(message_count=sender_counts.c.message_count - _COUNT),
        [{"sender": sender, "count": removed[sender]} for sender in sorted(removed)],
    )
    gone = conn.execute(
        delete(sender_counts)
        .where(sender_counts.c.from_msisdn.in_(list(removed)), sender_counts.c.message_count <= 0)
        .returning(sender_counts.c.from_msisdn)
    ).all()
    _add_to_totals(conn, -len(rows), -len(gone))
    return len(rows)


# How a delete batch changes the totals (inserts use the driver statements below).
_ADD_TO_TOTALS = (
    update(message_totals)
    .where(message_totals.c.id == 1)
    .values(
        total_messages=message_totals.c.total_messages + bindparam("messages_added"),
        senders_count=message_totals.c.senders_count + bindparam("senders_added"),
    )
)


# On SQLite the counters are kept with three constant statements on the driver's
# connection: they run inside the serialized write transaction of every batch, where
# SQLAlchemy's own per-statement work cost as much as SQLite's (ingestion fell 19% that
# way, 4% this way). Writers never overlap there, so "known before" is read up front.
_SQLITE_KNOWN_SENDERS = "SELECT from_msisdn FROM sender_counts WHERE from_msisdn IN (SELECT value FROM json_each(?))"
_SQLITE_ADD_TO_SENDER = (
    "INSERT INTO sender_counts (from_msisdn, message_count) VALUES (?, ?) "
    "ON CONFLICT (from_msisdn) DO UPDATE SET message_count = message_count + excluded.message_count"
)
_SQLITE_ADD_TO_TOTALS = (
    "UPDATE message_totals SET total_messages = total_messages + ?, senders_count = senders_count + ? WHERE id = 1"
)


# On PostgreSQL transactions of several hosts overlap: whether the upsert inserted the
# sender's row (xmax is 0 only for a row this statement inserted) is the one reliable
# answer to "new sender?", read under the row lock the upsert holds until commit.
_UPSERT_SENDER = postgresql.insert(sender_counts).values(from_msisdn=_SENDER, message_count=_COUNT)
_PG_ADD_TO_SENDER = _UPSERT_SENDER.on_conflict_do_update(
    index_elements=[sender_counts.c.from_msisdn],
    set_={"message_count": sender_counts.c.message_count + _UPSERT_SENDER.excluded.message_count},
).returning(literal_column("xmax = 0", Boolean))


def _add_to_counters(conn: Connection, added: Counter[str]) -> None:
    # Senders in sorted order: two transactions lock their rows in one order, no deadlock.
    new_rows = conn.execute(
        _PG_ADD_TO_SENDER, [{"sender": sender, "count": added[sender]} for sender in sorted(added)]
    ).scalars()
    _add_to_totals(conn, sum(added.values()), sum(1 for inserted in new_rows if inserted))


def _add_to_counters_sqlite(conn: Connection, added: Counter[str]) -> None:
    driver = conn.connection.driver_connection
    # A sender not known before this batch adds one to senders_count.
    known = driver.execute(_SQLITE_KNOWN_SENDERS, (json.dumps(list(added)),)).fetchall()
    driver.executemany(_SQLITE_ADD_TO_SENDER, list(added.items()))
    driver.execute(_SQLITE_ADD_TO_TOTALS, (sum(added.values()), len(added) - len(known)))


def _add_to_totals(conn: Connection, messages_added: int, senders_added: int) -> None:
    conn.execute(_ADD_TO_TOTALS, {"messages_added": messages_added, "senders_added": senders_added})


def _filter_conditions(
    conn: Connection, message_filter: MessageFilter, trigram_texts: dict[str, int] | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if message_filter.sender is not None:
        conditions.append(messages.c.from_msisdn == _to_column(conn, message_filter.sender))
    if message_filter.since is not None:
        conditions.append(messages.c.ts_instant >= instant_key(message_filter.since))
    if message_filter.text_contains is not None:
        conditions.extend(_text_contains(conn, message_filter.text_contains, trigram_texts))
    return conditions


def _text_contains(conn: Connection, needle: str, trigram_texts: dict[str, int] | None) -> list[ColumnElement[bool]]:
    """Conditions that hold exactly for texts containing `needle` (folded), made cheap.

    NULL text never matches. On PostgreSQL a LIKE with % _ and \\ escaped (so they stay
    literal), which the pg_trgm GIN index serves. On SQLite instr compares literally; a
    needle of three or more characters is first narrowed to the texts that hold its two
    rarest trigrams, when they are rare enough for that to pay off; `trigram_texts` are
    its trigrams' text counts (None: one is in no text).
    """
    folded = fold_text(needle)
    if conn.dialect.name == "postgresql":
        return [messages.c.text_folded.contains(folded, autoescape=True)]
    contains = func.instr(messages.c.text_folded, folded) > 0
    if len(folded) < TEXT_INDEX_MIN_CHARS:
        return [contains]
    if trigram_texts is None:
        return [false()]
    rarest = sorted(trigram_texts, key=trigram_texts.get)[:2]
    if trigram_texts[rarest[0]] > COMMON_TRIGRAM_TEXTS:
        return [contains]
    # Each trigram a quoted FTS phrase: operators and punctuation in the input stay literal.
    query = " AND ".join('"' + trigram.replace('"', '""') + '"' for trigram in rarest)
    candidates = select(messages_text_index.c.rowid).where(messages_text_index.c.text_folded.match(query))
    return [messages.c.id.in_(candidates), contains]


def _trigram_text_counts(conn: Connection, folded: str) -> dict[str, int] | None:
    """How many texts hold each trigram of `folded`; None when one is in no text at all."""
    trigrams = {folded[start : start + 3] for start in range(len(folded) - 2)}
    counts = dict(
        conn.execute(
            select(messages_text_vocabulary.c.term, messages_text_vocabulary.c.doc).where(
                messages_text_vocabulary.c.term.in_(trigrams)
            )
        ).all()
    )
    return counts if len(counts) == len(trigrams) else None


def _needle_trigram_counts(conn: Connection, message_filter: MessageFilter) -> dict[str, int] | None:
    # Read once per request: at millions of texts counting a common trigram takes a while.
    needle = fold_text(message_filter.text_contains)
    if conn.dialect.name != "sqlite" or needle is None or len(needle) < TEXT_INDEX_MIN_CHARS:
        return None
    return _trigram_text_counts(conn, needle)


def _count_matching(
    conn: Connection, message_filter: MessageFilter, conditions: list, trigram_texts: dict[str, int] | None
) -> int:
    # Without filters, or with `from` alone, the counters kept with the writes answer.
    only_sender = message_filter.since is None and message_filter.text_contains is None
    if only_sender and message_filter.sender is None:
        return conn.execute(select(message_totals.c.total_messages).where(message_totals.c.id == 1)).scalar_one()
    if only_sender:
        count = conn.execute(
            select(sender_counts.c.message_count).where(
                sender_counts.c.from_msisdn == _to_column(conn, message_filter.sender)
            )
        ).scalar_one_or_none()
        return count or 0
    only_text = message_filter.sender is None and message_filter.since is None
    needle = fold_text(message_filter.text_contains) if only_text else None
    if conn.dialect.name == "sqlite" and needle is not None and len(needle) == TEXT_INDEX_MIN_CHARS:
        # A three-character needle is one trigram: the index knows how many texts hold it.
        return (trigram_texts or {}).get(needle, 0)
    return conn.execute(select(func.count()).select_from(messages).where(*conditions)).scalar_one()


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
    trigram_texts = _needle_trigram_counts(conn, message_filter)
    conditions = _filter_conditions(conn, message_filter, trigram_texts)
    total = _count_matching(conn, message_filter, conditions, trigram_texts) if with_total else -1
    page_conditions = list(conditions)
    if after is not None:
        page_conditions.append(
            tuple_(messages.c.ts_instant, messages.c.message_id)
            > tuple_(after.instant, _to_column(conn, after.message_id))
        )
    rows = conn.execute(
        select(
            messages.c.message_id,
            messages.c.from_msisdn,
            messages.c.to_msisdn,
            messages.c.ts,
            messages.c.text,
            messages.c.created_at,
            messages.c.ts_instant,
        )
        .where(*page_conditions)
        .order_by(messages.c.ts_instant, messages.c.message_id)
        .limit(limit + 1)
        .offset(offset)
    ).all()
    items = [StoredMessage(*row[:6]) for row in rows[:limit]]
    if conn.dialect.name == "postgresql":
        items = [
            StoredMessage(
                _unescape_nul(item.message_id),
                item.sender,
                item.recipient,
                item.ts,
                None if item.text is None else _unescape_nul(item.text),
                item.created_at,
            )
            for item in items
        ]
    next_position = Position(rows[limit - 1].ts_instant, items[limit - 1].message_id) if len(rows) > limit else None
    return MessagePage(items=items, total=total, next_position=next_position)


def message_stats(conn: Connection) -> MessageStats:
    """Totals, the top senders (count descending, then sender ascending) and the time range,
    from the counters kept with the writes and the instant index: no scan."""
    total, senders = conn.execute(
        select(message_totals.c.total_messages, message_totals.c.senders_count).where(message_totals.c.id == 1)
    ).one()
    top = conn.execute(
        select(sender_counts.c.from_msisdn, sender_counts.c.message_count)
        .order_by(sender_counts.c.message_count.desc(), sender_counts.c.from_msisdn)
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
