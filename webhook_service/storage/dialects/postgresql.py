"""PostgreSQL: one server for several app hosts, pg_trgm for search, psycopg 3."""

from __future__ import annotations

import re
import select as select_module
import time
from collections import Counter
from typing import ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Connection,
    Engine,
    Text,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DisconnectionError, OperationalError

from webhook_service.storage.dialects.base import (
    ADD_TO_TOTALS,
    LOCK_WAIT_MS,
    LOCK_WAIT_OPTION,
    POOL_TIMEOUT_SECONDS,
    BackupUnsupported,
    Dialect,
    InsertedRows,
    SearchPlan,
    key_parameter,
    most_collected,
    remaining_budget_ms,
    stored_total,
)
from webhook_service.storage.tables import HELD_TEXT_MAX_BYTES, message_totals, messages, sender_counts

# psycopg 3, whichever way the URL names PostgreSQL.
DRIVERNAME = "postgresql+psycopg"
CONNECT_TIMEOUT_SECONDS = 5
# How long a served statement may run at most (the gunicorn worker timeout is 30 s).
STATEMENT_TIMEOUT_MS = 25_000
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
_RESERVE_POSITIONS = (
    update(message_totals)
    .where(message_totals.c.id == 1)
    .values(last_position=message_totals.c.last_position + bindparam("count"))
    .returning(message_totals.c.last_position - bindparam("count"))
)
# Whether the upsert inserted the sender's row (xmax is 0 only for a row this statement
# inserted) is the one reliable answer to "new sender?" when several hosts write at once,
# read under the row lock the upsert holds until commit.
_UPSERT_SENDER = postgresql.insert(sender_counts).values(from_msisdn=bindparam("sender"), message_count=bindparam("n"))
_ADD_TO_SENDER = _UPSERT_SENDER.on_conflict_do_update(
    index_elements=[sender_counts.c.from_msisdn],
    set_={"message_count": sender_counts.c.message_count + _UPSERT_SENDER.excluded.message_count},
).returning(literal_column("xmax = 0", Boolean))


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
            options["options"] = f"-c statement_timeout={STATEMENT_TIMEOUT_MS:d} -c lock_timeout={LOCK_WAIT_MS:d}"
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

    def reserve_positions(self, conn: Connection, count: int) -> int:
        """Positions in commit order: a sequence value is taken at insert, not at commit, so
        two hosts' transactions could commit out of order and a reader that had passed the
        later position would never see the earlier one. Instead positions are taken from
        the one totals row, whose lock this UPDATE holds until the transaction ends: the
        next writer gets its positions only after this transaction has committed (or rolled
        back, leaving a gap that no one ever fills). So a transaction with higher positions
        always commits after every one with lower positions, and a reader's snapshot that
        holds a position holds every committed lower one too. This runs first in every
        write transaction that changes the totals (purge locks the row first too), so the
        row is always the first lock taken: no deadlock."""
        return conn.execute(_RESERVE_POSITIONS, {"count": count}).scalar_one()

    def insert_if_new(self, conn: Connection, rows: list[dict]) -> InsertedRows:
        return set(conn.execute(_INSERT_IF_NEW, rows).scalars())

    def add_to_counters(self, conn: Connection, added: Counter[str]) -> None:
        # Senders in sorted order: two transactions lock their rows in one order, no deadlock.
        new_rows = conn.execute(_ADD_TO_SENDER, [{"sender": sender, "n": added[sender]} for sender in sorted(added)])
        senders_added = sum(1 for inserted in new_rows.scalars() if inserted)
        conn.execute(ADD_TO_TOTALS, {"messages_added": sum(added.values()), "senders_added": senders_added})

    def add_counts(self, conn: Connection, upsert, keys, count, rows: list[dict]) -> None:
        # One statement over arrays: run row by row, the hundreds of gram counts of a batch
        # doubled the time of an insert transaction (3.5 -> 6.3 ms for one message).
        statement = _ARRAY_UPSERTS.get(count.table.name)
        if statement is None:
            statement = _ARRAY_UPSERTS[count.table.name] = _upsert_arrays(keys, count)
        parameters = {_array_parameter(key): [row[key_parameter(key)] for row in rows] for key in keys}
        parameters[_COUNTS_PARAMETER] = [row["n"] for row in rows]
        conn.execute(statement, parameters)

    def backup(self, destination, progress=None) -> None:
        raise BackupUnsupported("backup copies SQLite databases; for PostgreSQL use pg_dump (see the README)")

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

    def search_plan(self, conn: Connection, folded: str, texts: int | None, total: int | None = None) -> SearchPlan:
        """A needle of three or more characters that is not known to be common is a LIKE with
        % _ and \\ escaped, which the pg_trgm GIN index serves. A needle many texts hold is
        tested with strpos, which the trigram index does not serve, so the server reads in
        page order (a page is a few thousand rows away) instead of gathering every match
        before the first. The trigram index cannot narrow a needle of one or two characters:
        when few texts hold one, their ids are collected in one scan, counted, and the page
        is read by id, so the server never walks the order's index through rows that do not
        match (1.5 s for a needle in 20 of 1,000,000 texts; 250 ms this way)."""
        like = messages.c.text_folded.contains(folded, autoescape=True)
        if texts is None:
            return SearchPlan([like])
        found = func.strpos(messages.c.text_folded, folded) > 0
        most = most_collected(stored_total(conn, total))
        if texts > most:
            return SearchPlan([found], known_count=texts)
        if len(folded) >= TRIGRAM_CHARS:
            return SearchPlan([like], known_count=texts)
        ids = conn.execute(select(messages.c.id).where(found).limit(most + 1)).scalars().all()
        if len(ids) != texts:  # the gram counts and the texts always agree; if not, test every text
            return SearchPlan([found], known_count=texts)
        return SearchPlan([messages.c.id == any_(bindparam("ids", ids, type_=ARRAY(BigInteger)))], known_count=texts)


# The INSERT ... SELECT unnest(...) statement of each kept-count table, made on first use
# (building one took 0.25 ms, three times a batch, while every other writer waited).
_ARRAY_UPSERTS: dict[str, object] = {}
_COUNTS_PARAMETER = "counts"


def _array_parameter(key) -> str:
    return f"{key.name}_values"


def _upsert_arrays(keys: tuple, count):
    """INSERT ... SELECT unnest(...) ON CONFLICT: add the counts array's values to `count`
    at the keys in the key columns' arrays (_array_parameter of each, in key order)."""
    columns = [func.unnest(bindparam(_array_parameter(key), type_=ARRAY(Text))).label(key.name) for key in keys]
    columns.append(func.unnest(bindparam(_COUNTS_PARAMETER, type_=ARRAY(BigInteger))).label(count.name))
    statement = postgresql.insert(count.table).from_select([*(key.name for key in keys), count.name], select(*columns))
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={count.name: count + statement.excluded[count.name]}
    )


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
