"""The interface every database dialect implements, and what its implementations share."""

from __future__ import annotations

import fcntl
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from sqlalchemy import ColumnElement, Connection, Engine, Executable, Insert, Table, bindparam, func, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from webhook_service.storage.dialects.deferred_counts import DeferredCounts
from webhook_service.storage.dialects.search import SearchPlan
from webhook_service.storage.tables import message_totals, messages, sender_counts

# The engine attribute that carries its dialect (see dialect_of).
ENGINE_DIALECT_ATTRIBUTE = "webhook_service_dialect"
# Execution options of a connection, read when its transaction begins: a write takes the
# write lock up front; `LOCK_WAIT_OPTION` (milliseconds) shortens how long it waits for it.
WRITE_OPTION = "webhook_service_write"
LOCK_WAIT_OPTION = "webhook_service_lock_wait_ms"
# How long a write waits for a lock another writer holds, on every database.
LOCK_WAIT_MS = 5000
# How long a pooled connection may be waited for when every one is in use.
POOL_TIMEOUT_SECONDS = 5


class BackupUnsupported(Exception):
    """This database is backed up with its own tools; the message names them."""


class ForwarderLock:
    """A lock one forwarder holds while it serves a destination: a file locked with flock,
    which the kernel releases when its holder dies, however it dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if no one holds it; True when taken."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class BackupFailed(Exception):
    """The copy could not be made; the message says why, in one line."""


InsertedRows = set[str]


class Dialect(ABC):
    """One database's way of doing what the service needs. One instance per Database (it may
    hold that database's writer lock), made by dialect_for_url."""

    # Whether app hosts other than this one may write to the database (their commits reach
    # no memory of this host, so a waiting feed reader must ask the database).
    shared_by_hosts = False
    # Execution options of a read transaction's connection, so that its statements share
    # one snapshot (SQLite's read transactions always do).
    read_options: ClassVar[dict[str, object]] = {}
    # Where writers run in parallel, the SQL of counts that writes append and a folder folds
    # in (dialects/deferred_counts.py); None where each write changes the counts in place.
    deferred: ClassVar[DeferredCounts | None] = None
    # The longest folded substrings whose texts the gram counts keep (read_model.grams): a
    # needle up to this long is counted from one row.
    longest_counted_gram: ClassVar[int] = 3

    def __init__(self, url: URL) -> None:
        self.url = url

    # Engines and transactions.

    @abstractmethod
    def create_engine(self, *, serving: bool, pool_size: int) -> Engine:
        """An engine with the durability and timeout settings the service relies on.

        `serving`: connections for requests (bounded statements, an existing database), as
        opposed to migrations (which may create the database and take long).
        """

    def attach(self, engine: Engine) -> Engine:
        """Make `engine` carry this dialect, for dialect_of."""
        setattr(engine, ENGINE_DIALECT_ATTRIBUTE, self)
        return engine

    @contextmanager
    def writer_turn(self) -> Iterator[None]:
        """Held around a write transaction: where the database has one writer at a time,
        writers queue here instead of polling for its lock."""
        yield

    def confirm_same_database(self, conn: Connection) -> None:
        """After a commit: raise OSError when what was written is not the database at the
        URL any more (a replaced file). Nothing to check where the server owns the files."""

    def budget_exceeded(self, error: OperationalError) -> bool:
        """True when `error` is a statement stopped by the current deadline."""
        return False

    @contextmanager
    def stopped_at_deadline(self, conn: Connection) -> Iterator[None]:
        """Around a read under a deadline: where the server does not stop statements itself,
        whatever runs on `conn` when the deadline passes is stopped then."""
        yield

    @contextmanager
    def large_transaction(self, conn: Connection) -> Iterator[None]:
        """Around a transaction on `conn` that changes thousands of rows (its commit included):
        the connection is tuned for it, and set back after."""
        yield

    def lock_migrations(self, conn: Connection) -> None:
        """Inside the migration transaction: make other migrators of this database wait."""

    def forwarder_lock(self, destination: str) -> ForwarderLock | None:
        """Where only one forwarder may serve a destination (one host), the lock it holds
        while it does; None where several share a destination's work through leases."""
        return None

    def close(self) -> None:
        """Release what this dialect holds for its database in this process."""

    def remove_idle_files(self) -> None:
        """At a clean stop of the server: remove helper files beside the database that no
        process uses any more (never the database itself)."""

    # Values.

    def to_column(self, value: str) -> str:
        """A string as this database stores it in message_id and text."""
        return value

    def from_column(self, value: str) -> str:
        """A stored message_id or text as it was sent."""
        return value

    @property
    @abstractmethod
    def insert(self) -> Callable[[Table], Insert]:
        """The INSERT construct with ON CONFLICT support."""

    @abstractmethod
    def one_of(self, column: ColumnElement, values: list[int]) -> ColumnElement[bool]:
        """`column` is one of the whole numbers `values`, sent as one parameter (an IN list
        of thousands is that many parameters, each bound and checked on every execution)."""

    # Messages.

    @abstractmethod
    def reserve_positions(self, conn: Connection, count: int) -> int:
        """Take the next `count` feed positions for this transaction; returns the last one
        taken before them (the first new position is that plus one).

        Positions follow the order in which transactions commit: the implementation says why.
        """

    def feed_horizon(self) -> list[ColumnElement[bool]]:
        """Conditions on messages.id that keep a feed read below positions a transaction
        still running may yet take (none where positions are taken in commit order)."""
        return []

    def align_positions(self, conn: Connection) -> int:
        """In the migration transaction of a start: make every position taken from now on
        follow the newest stored one, where positions come from a counter the database does
        not carry (a restore into another server); returns by how much they were moved on."""
        return 0

    def feed_end(self, conn: Connection) -> int:
        """The feed's end: a position at or past every message stored, below every position a
        message stored later takes."""
        return conn.execute(select(message_totals.c.last_position).where(message_totals.c.id == 1)).scalar_one()

    @abstractmethod
    def insert_if_new(self, conn: Connection, rows: list[dict]) -> InsertedRows:
        """Insert the rows (stored form, message_id order) whose message_id is not stored
        yet, the earlier row of a repeated id winning; returns the inserted message_ids."""

    def add_to_counters(self, conn: Connection, added: Counter[str]) -> None:
        """Add the messages just inserted, by sender, to the sender counts and totals, in
        place (where counts are not deferred): one writer at a time, so a sender is new when
        it has no row before the upsert."""
        known = conn.execute(
            select(func.count()).select_from(sender_counts).where(sender_counts.c.from_msisdn.in_(list(added)))
        ).scalar_one()
        upsert = self.insert(sender_counts).values(from_msisdn=bindparam("sender"), message_count=bindparam("n"))
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[sender_counts.c.from_msisdn],
                set_={"message_count": sender_counts.c.message_count + upsert.excluded.message_count},
            ),
            [{"sender": sender, "n": added[sender]} for sender in sorted(added)],
        )
        conn.execute(
            update(message_totals)
            .where(message_totals.c.id == 1)
            .values(
                total_messages=message_totals.c.total_messages + sum(added.values()),
                senders_count=message_totals.c.senders_count + len(added) - known,
            )
        )

    def execute_many(self, conn: Connection, statement: Executable, rows: list[dict]) -> None:
        """Run `statement` once for each row of parameters, in the caller's transaction."""
        conn.execute(statement, rows)

    def add_counts(self, conn: Connection, upsert: Executable, keys: tuple, count, rows: list[dict]) -> None:
        """Add counts to the `count` column of its table at the key columns `keys`: `rows` of
        parameters (key_parameter of each key column, and n: what to add), in key order, each
        one run of `upsert`, in the caller's transaction."""
        self.execute_many(conn, upsert, rows)

    def count_messages(self, conn: Connection, conditions: list[ColumnElement[bool]], *, by_sender_text: bool) -> int:
        """How many messages meet `conditions`; `by_sender_text`: they filter one sender's
        messages and search their texts."""
        return conn.execute(select(func.count()).select_from(messages).where(*conditions)).scalar_one()

    @abstractmethod
    def search_plan(
        self, conn: Connection, folded: str, texts: int | None, total: int, *, alone: bool = False
    ) -> SearchPlan:
        """How to find the texts whose folded form holds `folded`, made cheap. `texts`: how
        many stored texts hold it, when the gram counts know (needles of up to three
        characters; never 0), else None. `total`: how many messages are stored. `alone`: the
        needle is the read's only filter (no `from` or `since` narrows what is read)."""

    def backup(self, destination: Path, progress: Callable[[int, int], None] | None = None) -> None:
        """Copy the database consistently to a new file while it is written.

        `progress(done, total)` is told how far it is. Raises BackupUnsupported where the
        database's own tools do this, BackupFailed when the copy cannot be made.
        """
        raise BackupUnsupported("this database is backed up with its own tools")
