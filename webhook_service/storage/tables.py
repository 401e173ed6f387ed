"""Every table the service owns, in one MetaData; the migrations must produce exactly these."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# Compared and ordered code point by code point on both databases: PostgreSQL's "C"
# collation does what SQLite's default BINARY does.
OrderedText = Text().with_variant(Text(collation="C"), "postgresql")

messages = Table(
    "messages",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
        comment="The message's feed position: its place in commit order, never reused (taken from "
        "message_totals.last_position); the SQLite rowid, and the text index's row key.",
    ),
    Column("message_id", OrderedText, nullable=False, comment="The sender's id; first delivery wins."),
    Column("from_msisdn", OrderedText, nullable=False, comment="Sender, E.164."),
    Column("to_msisdn", OrderedText, nullable=False, comment="Recipient, E.164."),
    Column("ts", Text, nullable=False, comment="The message time exactly as the sender wrote it."),
    Column(
        "ts_instant",
        OrderedText,
        nullable=False,
        comment="The instant ts denotes, as YYYY-MM-DDTHH:MM:SS.fffffffffZ: sorts as time does.",
    ),
    Column("text", Text, nullable=True, comment="Message body; NULL when the sender sent none."),
    Column(
        "text_folded",
        Text,
        nullable=True,
        comment="text case-folded for Unicode case-insensitive substring search.",
    ),
    Column("created_at", Text, nullable=False, comment="Ingestion time, UTC ISO-8601 with microseconds."),
    UniqueConstraint("message_id", name="uq_messages_message_id"),
    Index("ix_messages_ts_instant", "ts_instant", "message_id"),
    # Retention removes the messages stored longest ago first.
    Index("ix_messages_created_at", "created_at"),
    # ix_messages_from_ts_instant (SENDER_INDEX_NAME, below) is made by the migrations only.
)

# The messages columns an insert writes, in one fixed order.
MESSAGE_COLUMNS = (
    "id",
    "message_id",
    "from_msisdn",
    "to_msisdn",
    "ts",
    "ts_instant",
    "text",
    "text_folded",
    "created_at",
)

sender_counts = Table(
    "sender_counts",
    metadata,
    Column("from_msisdn", OrderedText, primary_key=True, comment="Sender, E.164."),
    Column(
        "message_count",
        BigInteger,
        nullable=False,
        comment="Messages stored from this sender; kept in the transaction of every insert and delete.",
    ),
    Index("ix_sender_counts_top", "message_count", "from_msisdn"),
)

message_totals = Table(
    "message_totals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False, comment="Always 1: one row."),
    Column("total_messages", BigInteger, nullable=False, comment="Messages stored; kept with every insert and delete."),
    Column("senders_count", BigInteger, nullable=False, comment="Rows of sender_counts, i.e. distinct senders."),
    Column(
        "last_position",
        BigInteger,
        nullable=False,
        comment="The highest feed position handed out; only ever grows, also when messages are purged.",
    ),
    Column(
        "transaction_offset",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="PostgreSQL: added to the transaction id of every feed position; raised at a start "
        "when the stored positions are ahead of the cluster's transaction ids (a restore).",
    ),
    Column(
        "deletions",
        BigInteger,
        nullable=False,
        server_default="0",
        comment="Transactions that deleted messages so far: a text total remembered before the latest is not used.",
    ),
)

# Messages per hour and per day they were stored in (created_at, UTC), kept with every
# insert and purge like sender_counts: GET /stats/timeline reads at most 1,000 of these rows.
timeline_counts = Table(
    "timeline_counts",
    metadata,
    Column("bucket", OrderedText, primary_key=True, comment="hour or day."),
    Column(
        "start",
        OrderedText,
        primary_key=True,
        comment="The bucket's first instant, YYYY-MM-DDTHH:00:00Z (hour) or YYYY-MM-DDT00:00:00Z (day).",
    ),
    Column("message_count", BigInteger, nullable=False, comment="Messages stored in it; rows at 0 are deleted."),
)

# For every substring of one to three characters of a stored folded text, how many texts
# hold it, kept with every insert and purge (storage/read_model/grams.py): the count of a
# short needle is one row, and a needle in no text is known absent without reading one.
text_grams = Table(
    "text_grams",
    metadata,
    Column("gram", OrderedText, primary_key=True, comment="One to three characters of folded text."),
    Column("texts", BigInteger, nullable=False, comment="Stored texts holding it; rows at 0 are deleted."),
)
# The same for substrings of four characters, kept where the dialect counts them
# (Dialect.longest_counted_gram: PostgreSQL); empty elsewhere.
text_four_grams = Table(
    "text_four_grams",
    metadata,
    Column("gram", OrderedText, primary_key=True, comment="Four characters of folded text."),
    Column("texts", BigInteger, nullable=False, comment="Stored texts holding it; rows at 0 are deleted."),
)

# Exact totals of long needles that many texts hold, remembered for a while where counting
# them means testing every text that may hold them (PostgreSQL: storage/read_model/
# text_totals.py). A total covers the messages below a feed position, which no transaction
# adds to; a read adds the newer ones that hold the needle. It is used only while no
# messages were deleted since it was counted (message_totals.deletions) and for
# REMEMBER_SECONDS. A migration that changes stored texts must empty it.
text_totals = Table(
    "text_totals",
    metadata,
    Column("needle", OrderedText, primary_key=True, comment="The folded needle, as stored texts hold it."),
    Column("total", BigInteger, nullable=False, comment="Messages below counted_below holding it."),
    Column("counted_below", BigInteger, nullable=False, comment="The feed position its total stops before."),
    Column("deletions", BigInteger, nullable=False, comment="message_totals.deletions when it was counted."),
    Column("counted_at", Float, nullable=False, comment="When it was counted, in Unix seconds of the database."),
)

# Messages per UTC day of their ts instant, kept with every insert and purge
# (storage/day_counts.py): a count under `since` reads one row per later day.
instant_day_counts = Table(
    "instant_day_counts",
    metadata,
    Column("day", OrderedText, primary_key=True, comment="YYYY-MM-DD, the first ten characters of ts_instant."),
    Column(
        "message_count", BigInteger, nullable=False, comment="Messages whose ts falls on it; rows at 0 are deleted."
    ),
)

# Where writers run in parallel (PostgreSQL), no write updates a kept count in place: each
# write transaction appends one row of what it changes in every kept count, and one process
# at a time folds the rows into the tables above (storage/read_model/). A read adds the rows
# not folded yet to what it reads there, so its counts are exact in every snapshot. SQLite's
# one writer changes the counts in place; there this table stays empty.
count_changes = Table(
    "count_changes",
    metadata,
    Column(
        "changes",
        JSON().with_variant(JSONB, "postgresql"),
        nullable=False,
        comment='One write\'s changes: {counter: {key: n}}, counters as in storage/read_model/, e.g. {"message_totals": {"total_messages": 3}}.',
    ),
)

# Work one process at a time does for the whole database (retention), whichever host it runs
# on: who holds it now, and how it last ended, for every host's metrics to tell.
maintenance_runs = Table(
    "maintenance_runs",
    metadata,
    Column("task", OrderedText, primary_key=True, comment="What runs: retention."),
    Column("owner", Text, nullable=True, comment="The process running it now (host:pid:random), if any."),
    Column("lease_until", Float, nullable=True, comment="Until when that owner holds it, epoch seconds."),
    Column("last_started_at", Float, nullable=True, comment="When the last run started, epoch seconds."),
    Column("last_completed_at", Float, nullable=True, comment="When a run last completed, epoch seconds."),
    Column("last_outcome", Text, nullable=True, comment="completed, or failed: the reason in one line."),
    Column("last_removed", BigInteger, nullable=True, comment="Messages the last run removed."),
)

write_probe = Table(
    "write_probe",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False, comment="Always 1: one row, rewritten."),
    Column(
        "payload",
        LargeBinary,
        nullable=False,
        comment="As large as the largest delivery: readiness proves such a write still commits.",
    ),
    Column("written_at", Text, nullable=False, comment="When readiness last committed it, UTC ISO-8601."),
)

# On PostgreSQL a pg_trgm GIN index serves q; made by the migrations only, like the SQLite
# index below. pg_trgm takes trigrams within words only (`order shipped` gives those of
# `order` and of `shipped`, which most texts of a small vocabulary hold; `! ` gives none), so
# the index is over text_folded with every space and the commonest punctuation marks replaced
# by a letter of its own (TEXT_STAND_INS, in this order): a text is then one word to pg_trgm, and
# the trigrams across its spaces and marks (`r s`, `r!`) are indexed too. The first index
# (0004, within words) was replaced in 0017 by one with spaces replaced, and that in 0019.
TEXT_TRIGRAM_INDEX_NAME = "ix_messages_text_folded_trgm"
TEXT_SPANNING_TRIGRAM_INDEX_NAME = "ix_messages_text_spanning_trgm"
TEXT_LETTERS_TRIGRAM_INDEX_NAME = "ix_messages_text_letters_trgm"
SPACE_STAND_IN = "\u01c2"  # LATIN LETTER ALVEOLAR CLICK: a letter, rare in text
# Each mark's letter: IPA letters from U+0296 on (phonetic notation only, in no alphabet's
# everyday text). A mark left out costs only its narrowing; each one in costs a replace() for
# every text the index tests: counting the 125,621 texts holding `your otp is ` took 123 to
# 131 ms with spaces alone replaced, 137 to 150 with these four marks too, 164 to 204 with
# twelve (`,.!?:;'"-/()`), one process each.
TEXT_STAND_INS: tuple[tuple[str, str], ...] = (
    (" ", SPACE_STAND_IN),
    *((mark, chr(0x0296 + place)) for place, mark in enumerate(",.!?")),
)

# The sender index orders each sender's messages: (from_msisdn, ts_instant, message_id) on
# PostgreSQL; on SQLite text_folded follows, so that counting a sender's messages that hold a
# needle reads no table row (PostgreSQL cannot hold long texts in a btree entry). It differs
# by database, so `metadata` leaves it to the migrations.
SENDER_INDEX_NAME = "ix_messages_from_ts_instant"
# The texts of fewer than three characters, which the text index cannot find: a partial
# index of text_folded on SQLite. On PostgreSQL the index of every text's length in
# characters finds them (it replaced the partial index of id of 0016 in 0018), and a needle
# longer than most texts is looked for in the few texts long enough to hold it.
SHORT_TEXT_INDEX_NAME = "ix_messages_short_text"
TEXT_LENGTH_INDEX_NAME = "ix_messages_text_length"
# PostgreSQL only: a sender's texts of up to HELD_TEXT_MAX_BYTES (UTF-8) in the sender's
# order, held in the index, and the longer ones, pointed to (a B-tree entry holds at most
# 2,704 bytes). Together they serve a count under `from` and `q` from index pages alone.
SENDER_HELD_TEXT_INDEX_NAME = "ix_messages_from_ts_held_text"
SENDER_LONG_TEXT_INDEX_NAME = "ix_messages_from_ts_long_text"
HELD_TEXT_MAX_BYTES = 2000

# The SQLite full-text index over text_folded lives beside the tables above but is created
# by the migrations only; it has no place in `metadata`, so schema comparison skips it.
TEXT_INDEX_NAME = "messages_text_fts"

text_index_metadata = MetaData()
messages_text_index = Table(
    TEXT_INDEX_NAME,
    text_index_metadata,
    Column("rowid", Integer, primary_key=True),
    Column("text_folded", Text),
)


def is_outside_metadata(name: str | None, type_: str = "table") -> bool:
    """True for the text indexes (SQLite's, with its shadow tables, and PostgreSQL's
    trigram index), the sender indexes and the short-text and text length indexes, which
    `metadata` does not describe."""
    if type_ == "index":
        return name in (
            TEXT_TRIGRAM_INDEX_NAME,
            TEXT_SPANNING_TRIGRAM_INDEX_NAME,
            TEXT_LETTERS_TRIGRAM_INDEX_NAME,
            SENDER_INDEX_NAME,
            SHORT_TEXT_INDEX_NAME,
            TEXT_LENGTH_INDEX_NAME,
            SENDER_HELD_TEXT_INDEX_NAME,
            SENDER_LONG_TEXT_INDEX_NAME,
        )
    return type_ == "table" and bool(name) and name.startswith(TEXT_INDEX_NAME)


# The forwarder's state. Every message with a position up to a destination's `position`
# that its match keeps has been delivered to it, or has a row in forward_deliveries
# (waiting, leased, or dead); the messages after it are the destination's backlog: the feed
# itself, not a copy.
forward_destinations = Table(
    "forward_destinations",
    metadata,
    Column("name", OrderedText, primary_key=True, comment="The destination's name in the forwarder's TOML file."),
    Column(
        "position",
        BigInteger,
        nullable=False,
        comment="Feed position up to which every message is delivered or has a forward_deliveries row.",
    ),
    Column("created_at", Text, nullable=False, comment="When the forwarder first served it, UTC ISO-8601."),
    Column(
        "policy",
        Text,
        nullable=True,
        comment="JSON: the match and order the forwarder last served it with (replay chooses by them).",
    ),
)

forward_deliveries = Table(
    "forward_deliveries",
    metadata,
    Column("destination", OrderedText, primary_key=True, comment="forward_destinations.name."),
    Column("position", BigInteger, primary_key=True, comment="The message's feed position (messages.id)."),
    Column("state", Text, nullable=False, comment="pending (to be tried, maybe leased now) or dead (a dead letter)."),
    Column("attempts", Integer, nullable=False, comment="Attempts made since it was queued (or replayed)."),
    Column(
        "queued_at",
        Float,
        nullable=False,
        comment="When it was queued or replayed, epoch seconds: max_age counts from it.",
    ),
    Column("next_attempt_at", Float, nullable=False, comment="Not tried again before this, epoch seconds."),
    Column("lease_owner", Text, nullable=True, comment="The forwarder trying it now, if any."),
    Column("lease_until", Float, nullable=True, comment="Until when that forwarder holds it, epoch seconds."),
    Column("last_status", Integer, nullable=True, comment="The HTTP status of the last attempt, if it got one."),
    Column("last_error", Text, nullable=True, comment="What went wrong in the last attempt, in one line."),
    Column("last_attempt_at", Float, nullable=True, comment="When the last attempt ended, epoch seconds."),
    Column(
        "order_key",
        OrderedText,
        nullable=True,
        comment="With an order: the sender (or sender and recipient); tried after every earlier pending row of it.",
    ),
    Index("ix_forward_deliveries_due", "destination", "state", "next_attempt_at"),
    Index("ix_forward_deliveries_order", "destination", "order_key", "position"),
)
