"""PostgreSQL: one server for several app hosts, pg_trgm for search, psycopg 3."""

from __future__ import annotations

import re
import select as select_module
import time
from typing import ClassVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Text,
    and_,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DisconnectionError, OperationalError

from webhook_service.storage.dialects.base import (
    LOCK_WAIT_MS,
    LOCK_WAIT_OPTION,
    POOL_TIMEOUT_SECONDS,
    BackupUnsupported,
    Dialect,
    InsertedRows,
)
from webhook_service.storage.dialects.budget import remaining_budget_ms
from webhook_service.storage.dialects.deferred_counts import DeferredCounts
from webhook_service.storage.dialects.search import SearchPlan, most_collected
from webhook_service.storage.tables import (
    HELD_TEXT_MAX_BYTES,
    TEXT_STAND_INS,
    message_totals,
    messages,
    text_four_grams,
    text_grams,
)

# psycopg 3, whichever way the URL names PostgreSQL.
DRIVERNAME = "postgresql+psycopg"
CONNECT_TIMEOUT_SECONDS = 5
# How long a served statement may run at most (the gunicorn worker timeout is 30 s).
STATEMENT_TIMEOUT_MS = 25_000
# A transaction of the service's left open and idle this long is ended by the server: a
# running transaction holds back the feed (see reserve_positions), so none of ours may linger.
IDLE_IN_TRANSACTION_MS = 30_000
# SQLSTATE of a statement cancelled by statement_timeout.
QUERY_CANCELED = "57014"
# The advisory lock every migrator of a database takes first (a fixed number that names
# this service's migrations), so that hosts starting together take turns.
MIGRATION_LOCK_KEY = 0x77656268_6F6F6B01
# How far past the read budget a request's last statement may run, at most: the server is
# told the budget left only when this much has passed since it was last told.
BUDGET_TOLERANCE_MS = 20
# Execution option of a read transaction's connection (see read_options).
_READ_OPTION = "webhook_service_read"
# connection.info key: when this transaction last told the server its statement timeout.
_BUDGET_TOLD_AT = "webhook_service_budget_told_at"
# pg_trgm narrows a LIKE by the trigrams of its pattern: a needle needs three characters.
TRIGRAM_CHARS = 3
# A page of collected matches is read by sorting them (a heap row each) or by walking the
# order's index until 51 hold the needle (about 51 * messages / matches rows): sorting wins
# below sqrt(this * messages) matches (1,000,000 messages: 6,985 matches sorted in 33 ms,
# walked in 18; 805 sorted in 10, walked in 209).
SORT_OVER_WALK = 25
# A longer needle's matches are collected only when its rarest four-character gram is in at
# most this many times as many texts as are collected: every text holding the needle holds
# it, and at 1,000,000 messages one held by more (`your otp is `, 125,621 texts of the otp
# corpus, its rarest gram as many) usually is too, and collecting would first gather a bitmap
# of an eighth of the table and stop at `most` (51 ms spent for nothing). Phrases of common
# words that few texts hold have a gram under this (`you you, to `: 256 texts, 3,377).
COLLECT_BELOW_RAREST = 4
# The grams whose texts are counted that narrow a longer needle best (longest_counted_gram).
FOUR_GRAM_CHARS = 4
# A needle shorter than a trigram is looked up through at most this many stored trigrams that
# contain it (a LIKE each, one bitmap of them all); held by more, its texts are found by
# testing every text.
MAX_TRIGRAMS_OF_SHORT_NEEDLE = 64


def _sql_text(value: str) -> str:
    """`value` as an SQL string literal (a constant of this module's, never a client's)."""
    return "'" + value.replace("'", "''") + "'"


def _lettered_expression(column):
    # Innermost first, in TEXT_STAND_INS order: the same expression as the index's.
    for mark, letter in TEXT_STAND_INS:
        column = func.replace(column, literal_column(_sql_text(mark)), literal_column(_sql_text(letter)))
    return column


# What the trigram index is over (tables.TEXT_LETTERS_TRIGRAM_INDEX_NAME): the folded text,
# its spaces and common marks replaced by letters. Literals, not parameters: the planner
# matches a statement's expression to the index's only when they are the same (psycopg
# prepares a statement run often, and a prepared plan's parameters are unknown when it is
# planned).
_LETTERED_TEXT = _lettered_expression(messages.c.text_folded)
_TO_LETTERS = str.maketrans(dict(TEXT_STAND_INS))
_STAND_IN_LETTERS = frozenset(letter for _mark, letter in TEXT_STAND_INS)


def _as_letters(needle: str) -> str:
    """`needle` as the trigram index sees texts: spaces and common marks as their letters."""
    return needle.translate(_TO_LETTERS)


def text_holds(needle: str) -> ColumnElement[bool]:
    """The folded text holds `needle` (folded), in a condition the trigram index serves: a
    LIKE over the lettered text, which alone decides unless the needle has a space, a mark
    or a letter standing in for one (a text may hold that letter itself), then also strpos
    over the text.

    The text is also at least as long as the needle, which the text length index serves: the
    trigrams of a needle that repeats itself (`you you you ...`, 64 characters) are those of
    its first few words, in 49,700 of 1,000,000 sms texts, none of them 64 characters long.
    The planner reads whichever index its statistics say is narrower; the length is written
    as a literal so that they can."""
    longer = func.char_length(messages.c.text_folded) >= literal_column(str(len(needle)))
    as_letters = _as_letters(needle)
    like = _LETTERED_TEXT.contains(as_letters, autoescape=True)
    if as_letters == needle and _STAND_IN_LETTERS.isdisjoint(needle):
        return and_(like, longer)
    return and_(like, longer, func.strpos(messages.c.text_folded, needle) > 0)


# PostgreSQL text cannot hold NUL, which a JSON string may: in message_id and text it is
# stored escaped, NUL as U+0001 U+0001 and U+0001 as U+0001 U+0002. The escape keeps
# code point order (NUL and U+0001 still sort below every other character, in their own
# order), so ids order, compare and stay unique as on SQLite, which stores them as sent.
_ESCAPED = re.compile("\x01([\x01\x02])")

# Built once: constructing the statement per call cost more than the commit.
_INSERT_IF_NEW = (
    postgresql.insert(messages)
    .on_conflict_do_nothing(index_elements=[messages.c.message_id])
    .returning(messages.c.message_id)
)
# A feed position is the id of the transaction that stored the message (xid8, which only
# grows) plus the database's transaction_offset, times POSITIONS_PER_TRANSACTION, plus the
# message's place among the ones that transaction stored: see reserve_positions. The offset
# is 0 until the database moves to a cluster whose transaction ids are behind its positions
# (align_positions); it is read in the same statement as the id, so every host sees a change.
POSITIONS_PER_TRANSACTION = 1 << 16
_OFFSET = select(message_totals.c.transaction_offset).where(message_totals.c.id == 1).scalar_subquery()
_TRANSACTION = cast(cast(func.pg_current_xact_id(), Text), BigInteger)
_TRANSACTION_ID = select(_TRANSACTION + _OFFSET)
# The oldest transaction still running when the current snapshot was taken: every
# transaction with a lower id has ended, so no message below its first position can appear.
_HORIZON = cast(cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger) + _OFFSET
# connection.info key: (transaction id, positions it has taken so far).
_POSITIONS_TAKEN = "webhook_service_positions_taken"


def escape_nul(value: str) -> str:
    """`value` in its stored form: NUL and U+0001 escaped, order kept."""
    if "\x00" not in value and "\x01" not in value:
        return value
    return value.replace("\x01", "\x01\x02").replace("\x00", "\x01\x01")


def unescape_nul(value: str) -> str:
    """The value escape_nul was given."""
    if "\x01" not in value:
        return value
    return _ESCAPED.sub(lambda match: "\x00" if match.group(1) == "\x01" else "\x01", value)


class PostgresDialect(Dialect):
    """A PostgreSQL database that several app hosts share."""

    shared_by_hosts = True
    deferred = DeferredCounts()
    # The trigram index holds no positions and a count visits every matching row: `you ` in
    # 300,000 of 1,000,000 texts took 137 ms to count. Its texts are kept with the gram counts
    # (SQLite's trigram index holds positions and counts such a needle in the index).
    longest_counted_gram = FOUR_GRAM_CHARS
    # Under READ COMMITTED every statement takes a new snapshot: a total and its page could
    # disagree about a message committed between them. A read-only REPEATABLE READ transaction
    # takes one snapshot at its first statement and is never refused for serialization. It is
    # begun by _begin_read, on a connection psycopg leaves in autocommit mode.
    read_options: ClassVar[dict[str, object]] = {"isolation_level": "AUTOCOMMIT", _READ_OPTION: True}

    def create_engine(self, *, serving: bool, pool_size: int) -> Engine:
        """Serving connections carry statement and lock timeouts (migrations do not: building
        an index over millions of rows takes longer); the pool holds at most `pool_size`."""
        options = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "webhook-service"}
        if serving:
            options["options"] = (
                f"-c statement_timeout={STATEMENT_TIMEOUT_MS:d} -c lock_timeout={LOCK_WAIT_MS:d}"
                f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS:d}"
            )
        engine = create_engine(
            self.url.set(drivername=DRIVERNAME),
            hide_parameters=True,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT_SECONDS,
            connect_args=options,
        )
        event.listen(engine, "checkout", _replace_if_closed_by_server)
        event.listen(engine, "begin", _begin_transaction)
        event.listen(engine, "before_cursor_execute", _statement_within_budget)
        return self.attach(engine)

    def budget_exceeded(self, error: OperationalError) -> bool:
        return getattr(error.orig, "sqlstate", None) == QUERY_CANCELED

    def lock_migrations(self, conn: Connection) -> None:
        conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))

    def to_column(self, value: str) -> str:
        return escape_nul(value)

    def from_column(self, value: str) -> str:
        return unescape_nul(value)

    @property
    def insert(self):
        return postgresql.insert

    def one_of(self, column, values):
        """A join to the values unnested, not `= ANY(...)`: given few collected ids in a
        table of many, the planner walked the order's index testing each row against the
        array (1,894 ids of 1,000,000: 27,450 rows, 44 ms) where reading them by id and
        sorting takes 18 ms; joined, it reads them by id."""
        return column.in_(select(func.unnest(bindparam(None, values, type_=ARRAY(BigInteger)))))

    def reserve_positions(self, conn: Connection, count: int) -> int:
        """Positions in the order readers may pass them, with no lock: a transaction's
        positions start at its own id (xid8) times POSITIONS_PER_TRANSACTION, and readers
        stop below the first position of the oldest transaction still running in their
        snapshot (feed_horizon). Every transaction below that has ended, and every one that
        has not will take higher positions; so a message that commits late still lands
        ahead of every reader, and writers never wait for each other to take positions."""
        transaction = conn.execute(_TRANSACTION_ID).scalar_one()
        taken_by, taken = conn.info.get(_POSITIONS_TAKEN, (None, 0))
        first = taken if taken_by == transaction else 0
        if first + count > POSITIONS_PER_TRANSACTION:
            raise ValueError(f"at most {POSITIONS_PER_TRANSACTION} messages are stored in one transaction")
        conn.info[_POSITIONS_TAKEN] = (transaction, first + count)
        return transaction * POSITIONS_PER_TRANSACTION + first - 1

    def feed_horizon(self) -> list[ColumnElement[bool]]:
        return [messages.c.id < _HORIZON * POSITIONS_PER_TRANSACTION]

    def align_positions(self, conn: Connection) -> int:
        """Transaction ids are the cluster's own: a database restored into another cluster (or
        copied there by logical replication) may hold positions from ids that cluster has not
        reached, and what it stores next would land behind them, unseen by readers past them.
        Raise transaction_offset so that every transaction after this one takes positions past
        the newest stored; returns how much it was raised (0: nothing to do, the usual case).
        Run in the migration transaction of every start (under the migrators' lock), before
        that host's workers write: the first start on a restored database raises it before
        anything is stored there. Inserts under way are waited for before it looks again."""
        newest = select(func.max(messages.c.id)).scalar_subquery()
        behind = select(newest // POSITIONS_PER_TRANSACTION - (_TRANSACTION + _OFFSET) + 1)
        if (conn.execute(behind).scalar_one() or 0) <= 0:
            return 0
        conn.execute(text("LOCK TABLE messages IN SHARE ROW EXCLUSIVE MODE"))
        moved = conn.execute(behind).scalar_one()
        if moved <= 0:
            return 0
        conn.execute(
            update(message_totals)
            .where(message_totals.c.id == 1)
            .values(transaction_offset=message_totals.c.transaction_offset + moved)
        )
        return moved

    def feed_end(self, conn: Connection) -> int:
        """Below the first position of the oldest transaction still running: a position no
        message takes later (0 before the first transaction of the cluster)."""
        return conn.execute(select(_HORIZON * POSITIONS_PER_TRANSACTION - 1)).scalar_one()

    def insert_if_new(self, conn: Connection, rows: list[dict]) -> InsertedRows:
        return set(conn.execute(_INSERT_IF_NEW, rows).scalars())

    def backup(self, destination, progress=None) -> None:
        raise BackupUnsupported(
            'backup copies SQLite databases; on PostgreSQL use pg_dump -Fc -f messages.dump "$DATABASE_URL" '
            "(docs/postgresql.md, Backup)"
        )

    def count_messages(self, conn: Connection, conditions: list[ColumnElement[bool]], *, by_sender_text: bool) -> int:
        """A sender's texts are counted in two parts, each read from a sender index alone: the
        texts that ix_messages_from_ts_held_text holds and the longer ones (its table rows read
        for the test are few). The bound is written into the statement, not a parameter, so
        that the planner can see each part's partial index serves it."""
        if not by_sender_text:
            return super().count_messages(conn, conditions, by_sender_text=False)
        size = func.octet_length(messages.c.text_folded)
        bound = literal_column(str(HELD_TEXT_MAX_BYTES))
        held, long = (
            select(func.count()).select_from(messages).where(*conditions, part).scalar_subquery()
            for part in (size <= bound, size > bound)
        )
        return conn.execute(select(held + long)).scalar_one()

    def search_plan(
        self, conn: Connection, folded: str, texts: int | None, total: int, *, alone: bool = False
    ) -> SearchPlan:
        """A needle longer than the gram counts go (texts None) is a LIKE with % _ and \\
        escaped, which the pg_trgm GIN index serves. `alone`, its matches are collected in one
        scan, counted, and a page of them is read by sorting them when few (by walking the
        order's index when many, or when there are too many to collect); with `from` or
        `since`, the sender's or the day's index narrows first. One of four characters that
        few texts hold is collected the same way; one of three is a LIKE too. A needle many
        texts hold is tested with strpos, which the trigram index does not serve, so the
        server reads in page order (a page is a few thousand rows away) instead of gathering
        every match before the first. The trigram index cannot narrow a needle of one or two
        characters: when few texts hold one, their ids are collected in one scan, counted,
        and the page is read by id, so the server never walks the order's index through rows
        that do not match (1.5 s for a needle in 20 of 1,000,000 texts; 250 ms this way)."""
        like = text_holds(folded)
        most = most_collected(total)
        if texts is None and not (alone and self._few_may_hold(conn, folded, most)):
            return SearchPlan([like], remember_as=folded if alone else None)
        found = func.strpos(messages.c.text_folded, folded) > 0
        if texts is not None and texts > most:
            return SearchPlan([found], known_count=texts)
        if texts is None or (alone and len(folded) > TRIGRAM_CHARS):
            return self._collected(conn, folded, like, found, most, total)
        if len(folded) >= TRIGRAM_CHARS:
            return SearchPlan([like], known_count=texts)
        ids = self._short_needle_ids(conn, folded, texts)
        if ids is None:
            ids = conn.execute(select(messages.c.id).where(found).limit(most + 1)).scalars().all()
        if len(ids) != texts:  # the gram counts and the texts always agree; if not, test every text
            return SearchPlan([found], known_count=texts)
        return SearchPlan([self.one_of(messages.c.id, ids)], known_count=texts)

    def _collected(
        self,
        conn: Connection,
        folded: str,
        like: ColumnElement[bool],
        found: ColumnElement[bool],
        most: int,
        total: int,
    ) -> SearchPlan:
        """The plan of a needle alone that few texts may hold: its matches collected in one scan
        (up to `most`), counted, and a page of them read by sorting them, or by walking the
        order's index when a page is near in page order (tested with strpos, which the trigram
        index does not serve: given the LIKE, the planner gathered and sorted every match,
        `order shipped`, 6,985 texts, 19 ms where the walk takes 9). The planner cannot know
        how few texts hold a phrase of common words: for `free you` it walked the order's index
        through 52,000 rows to find 805 (209 ms; they are collected in 41) and counted them in
        a second scan. 1,000,000 sms messages over HTTP: `free you` 181 ms -> under 130, `you
        you, to ` 292 -> 154, `order shipped` (6,985 texts, walked) 49 -> 53."""
        ids = conn.execute(select(messages.c.id).where(like).limit(most + 1)).scalars().all()
        if len(ids) > most:
            return SearchPlan([like], remember_as=folded)
        if len(ids) ** 2 > SORT_OVER_WALK * total:  # a page is near in page order: walk it
            return SearchPlan([found], known_count=len(ids))
        return SearchPlan([self.one_of(messages.c.id, ids)], known_count=len(ids))

    @staticmethod
    def _short_needle_ids(conn: Connection, folded: str, texts: int) -> list[int] | None:
        """The ids of the `texts` texts holding a needle shorter than a trigram, from indexes:
        a text of three or more characters holds it exactly when it holds one of the stored
        trigrams that contain it (the gram counts list them; each a LIKE the trigram index
        serves), and the text length index finds the shorter texts (migration 0018). None when
        more trigrams than that hold it, when pg_trgm would take none from them (a needle with
        no letter or digit once its spaces and marks are letters, `%`: its LIKE would read the
        whole index), or when the two ways do not find exactly `texts` (the gram counts of the
        newest writes are not folded yet)."""
        if not any(character.isalnum() for character in _as_letters(folded)):
            return None
        trigram = func.char_length(text_grams.c.gram) == TRIGRAM_CHARS
        windows = (
            conn.execute(
                select(text_grams.c.gram)
                .where(trigram, func.strpos(text_grams.c.gram, folded) > 0)
                .limit(MAX_TRIGRAMS_OF_SHORT_NEEDLE + 1)
            )
            .scalars()
            .all()
        )
        if len(windows) > MAX_TRIGRAMS_OF_SHORT_NEEDLE:
            return None
        found: set[int] = set()
        if windows:
            held = or_(*(text_holds(window) for window in windows))
            found.update(conn.execute(select(messages.c.id).where(held).limit(texts + 1)).scalars())
        # The bound as a literal: the planner matches it to the partial index's condition.
        short = func.char_length(messages.c.text_folded) < literal_column(str(TRIGRAM_CHARS))
        found.update(
            conn.execute(select(messages.c.id).where(short, func.strpos(messages.c.text_folded, folded) > 0)).scalars()
        )
        return sorted(found) if len(found) == texts else None

    @staticmethod
    def _few_may_hold(conn: Connection, folded: str, most: int) -> bool:
        """Whether collecting the texts that hold `folded` may be worth it: its rarest
        four-character gram (by the folded gram counts) is in at most COLLECT_BELOW_RAREST
        times `most` texts."""
        grams = {folded[start : start + FOUR_GRAM_CHARS] for start in range(len(folded) - FOUR_GRAM_CHARS + 1)}
        texts = text_four_grams.c.texts
        rarest = conn.execute(select(func.min(texts)).where(text_four_grams.c.gram.in_(grams))).scalar()
        return rarest is None or rarest <= COLLECT_BELOW_RAREST * most


def _statement_within_budget(connection, cursor, statement, parameters, context, executemany) -> None:
    # A read under a time budget: the budget is the request's, not each statement's. The
    # server is told what is left of it (for this transaction only) before a statement, so a
    # request of several statements stops when the budget is spent, as on SQLite. Telling it
    # is a round trip; within BUDGET_TOLERANCE_MS of the last time it was told, a statement
    # runs under that timeout instead, ending at most that much past the budget.
    remaining = remaining_budget_ms()
    if remaining is None:
        return
    now = time.monotonic()
    told_at = connection.info.get(_BUDGET_TOLD_AT)
    if told_at is not None and now - told_at <= BUDGET_TOLERANCE_MS / 1000:
        return
    cursor.execute("SELECT set_config('statement_timeout', %s, true)", (str(remaining),))
    connection.info[_BUDGET_TOLD_AT] = now


def _replace_if_closed_by_server(dbapi_connection, record, proxy) -> None:
    # A connection the server closed (a restart, a failover, a terminated backend) is
    # replaced at checkout instead of failing the request that drew it. An idle connection
    # has nothing to read until the server sends something: its notice that it is closing
    # the connection, or the end of the stream. So a readable socket means a closed
    # connection, found without the round trip a ping costs every request.
    if dbapi_connection.closed:
        raise DisconnectionError("this pooled connection is closed")
    # poll, not select: a worker's descriptors may be numbered past select's 1,024.
    readable = select_module.poll()
    readable.register(dbapi_connection.fileno(), select_module.POLLIN)
    if readable.poll(0):
        raise DisconnectionError("the server closed this pooled connection")


def _begin_transaction(connection) -> None:
    # The timeout told to the server ends with the transaction that was told.
    connection.info.pop(_BUDGET_TOLD_AT, None)
    options = connection.get_execution_options()
    if options.get(_READ_OPTION):
        _begin_read(connection)
    lock_wait_ms = options.get(LOCK_WAIT_OPTION)
    if lock_wait_ms is not None:
        connection.exec_driver_sql("SELECT set_config('lock_timeout', %(ms)s, true)", {"ms": str(int(lock_wait_ms))})


def _begin_read(connection) -> None:
    # A read's connection is in autocommit mode, so psycopg sends no BEGIN of its own: the
    # read's BEGIN and its budget go as one simple-protocol query, one round trip where
    # psycopg's BEGIN and the first set_config took two. psycopg's commit and rollback still
    # end the transaction (they act whenever the server is in one). The timeout is a number
    # this process computed, never a client's text.
    start = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    remaining = remaining_budget_ms()
    if remaining is not None:
        connection.info[_BUDGET_TOLD_AT] = time.monotonic()
        start += f"; SET LOCAL statement_timeout = {int(remaining):d}"
    connection.exec_driver_sql(start)
