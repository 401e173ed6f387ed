"""The Database of a process: its engine (made again after a fork), write and read
transactions, and what a database failure is."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from webhook_service.config import DEFAULT_POOL_SIZE
from webhook_service.storage.dialects import Dialect, dialect_for_url
from webhook_service.storage.dialects.base import LOCK_WAIT_OPTION, WRITE_OPTION
from webhook_service.storage.dialects.budget import statement_deadline
from webhook_service.storage.write_health import WRITE_HEALTH, WriteFailure, database_key

logger = structlog.get_logger(__name__)

# What a failing database raises: the driver's errors, and OSError where its files cannot
# be opened or were replaced (SQLite).
DATABASE_ERRORS = (SQLAlchemyError, OSError)
# A readiness probe waits this long for the write lock before calling the database stuck.
PROBE_LOCK_WAIT_MS = 1000


# After a read this long (one that gathered many rows), freed memory is handed back to the
# system: glibc keeps what concurrent expensive reads freed in its arenas, and fifty at once
# left a worker 25 MB larger for good; handing it back (about 0.1 ms) halved that.
LONG_READ_SECONDS = 0.05
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)


def return_freed_memory() -> None:
    """Give the C heap's free pages back to the system, where the C library can (glibc)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class QueryBudgetExceeded(Exception):
    """A read ran past its time budget and was stopped, `seconds` after it began."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"stopped after {seconds:.3f} s")
        self.seconds = seconds


def describe_database_error(exc: BaseException) -> str:
    """The driver's reason on one line, without the statement or its parameters."""
    cause = getattr(exc, "orig", None) or exc
    if cause is not exc:
        # psycopg's messages run over several lines ("...\n\tIs the server running...").
        return f"{type(cause).__name__}: {' '.join(str(cause).split())}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return type(exc).__name__


def create_database_engine(url: str, *, serving: bool = False, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """An engine on `url` with the settings the service relies on.

    `serving`: connections for requests (bounded statements; the database must exist). Else
    for migrations and tools: a missing SQLite file is made and statements are not bounded.
    Raises OSError when a SQLite file's folder cannot be made.
    """
    return dialect_for_url(url).create_engine(serving=serving, pool_size=pool_size)


@contextmanager
def _discarded_on_failure(conn: Connection) -> Iterator[None]:
    # A connection whose write failed is not reused: SQLite opens a write-protected file
    # read-only and keeps it so even after the file is writable again, and one that read a
    # malformed page may hold it in its cache.
    try:
        yield
    except DBAPIError:
        conn.invalidate()
        raise


# connection.info key: what a read transaction leaves to write once it has ended (after_read).
AFTER_READ = "webhook_service_after_read"


def after_read(conn: Connection, action: Callable[[Connection], None]) -> None:
    """Have `action(connection)` run once the read transaction of `conn` has ended well, in
    a write transaction of its own (a read may leave behind what it found out)."""
    conn.info.setdefault(AFTER_READ, []).append(action)


class Database:
    """Owns the engine of the current process and the dialect chosen for its URL.

    A forked worker must not reuse its parent's connections, so the engine is (re)created
    lazily whenever the process id changes.
    """

    def __init__(self, url: str, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.url = url
        self.pool_size = pool_size
        self.dialect: Dialect = dialect_for_url(url)
        self._key = database_key(url)
        self._engine: Engine | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The engine for this process (the database must exist: migrations create it)."""
        pid = os.getpid()
        if self._engine is None or self._pid != pid:
            with self._lock:
                if self._engine is None or self._pid != pid:
                    if self._engine is not None:
                        self._engine.dispose(close=False)
                    self._engine = self.dialect.create_engine(serving=True, pool_size=self.pool_size)
                    self._pid = pid
        return self._engine

    @contextmanager
    def write_transaction(
        self, *, probe: bool = False, decided_at: float | None = None, large: bool = False
    ) -> Iterator[Connection]:
        """A transaction that holds the write lock from its start; commits on success.

        Raises (an OSError) when, after the commit, the database written is no longer the
        one at the URL: the caller must not acknowledge what it wrote. A failure is
        remembered for readiness (shared by all workers) and a commit clears it. A `probe`
        (readiness's own write) waits at most about a second for the lock, where deliveries
        wait five, and its failure is not remembered: it speaks for itself and is tried
        again next time. `decided_at` (time.monotonic()) is when the caller read the failure
        state it acted on: the commit clears only a failure recorded before then. A `large`
        one (thousands of rows changed) runs on a connection tuned for it until its commit.
        """
        options = {WRITE_OPTION: True}
        if probe:
            options[LOCK_WAIT_OPTION] = PROBE_LOCK_WAIT_MS
        with (
            self.dialect.writer_turn(),
            self._recording_write_health(failures=not probe, began_at=decided_at),
            self.engine.connect() as conn,
        ):
            conn.execution_options(**options)
            tuned = self.dialect.large_transaction(conn) if large else nullcontext()
            with tuned, _discarded_on_failure(conn), conn.begin():
                yield conn
            self.dialect.confirm_same_database(conn)

    def last_write_failure(self) -> WriteFailure | None:
        """Why the latest write transaction of any worker failed and how long ago, or None
        when the latest one committed."""
        return WRITE_HEALTH.last_failure(self._key)

    @contextmanager
    def _recording_write_health(self, failures: bool, began_at: float | None = None) -> Iterator[None]:
        began_at = time.monotonic() if began_at is None else began_at
        try:
            yield
        except DATABASE_ERRORS as error:
            if failures:
                WRITE_HEALTH.record_failure(self._key, describe_database_error(error))
            raise
        WRITE_HEALTH.record_success(self._key, began_at)

    @contextmanager
    def read_transaction(self, budget_seconds: float | None = None) -> Iterator[Connection]:
        """A read-only transaction: every query in it sees one snapshot.

        With `budget_seconds`, its statements are stopped once that time has passed, and
        QueryBudgetExceeded is raised. What the read left to write (after_read) is written
        once it has ended well, each in a short write transaction of its own; a failure there
        is logged and the read's answer stands.
        """
        with self._read_only(budget_seconds) as conn:
            try:
                yield conn
            finally:
                leftover = conn.info.pop(AFTER_READ, ())
        for action in leftover:
            try:
                with self.engine.begin() as write:
                    action(write)
            except DATABASE_ERRORS as error:
                logger.info("what a read left to write was not written", reason=describe_database_error(error))

    @contextmanager
    def _read_only(self, budget_seconds: float | None) -> Iterator[Connection]:
        if budget_seconds is None:
            with self._read_connection() as conn, conn.begin():
                yield conn
            return
        started = time.monotonic()
        try:
            with (
                statement_deadline(budget_seconds),
                self._read_connection() as conn,
                conn.begin(),
                self.dialect.stopped_at_deadline(conn),
            ):
                yield conn
        except OperationalError as error:
            if self.dialect.budget_exceeded(error):
                raise QueryBudgetExceeded(time.monotonic() - started) from None
            raise
        finally:
            if time.monotonic() - started >= LONG_READ_SECONDS:
                return_freed_memory()

    @contextmanager
    def _read_connection(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if self.dialect.read_options:
                conn.execution_options(**self.dialect.read_options)
            yield conn

    def dispose(self) -> None:
        """Close every pooled connection of this process, and what its dialect holds."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
            self.dialect.close()
