"""Engine setup: URL parsing, SQLite durability settings, and one engine per process."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import QueuePool

from webhook_service.storage.write_health import WRITE_HEALTH, database_key

SUPPORTED_DIALECTS = ("sqlite", "postgresql")
# PostgreSQL is reached through psycopg 3, whichever way the URL names it.
POSTGRES_DRIVERNAME = "postgresql+psycopg"
SQLITE_BUSY_TIMEOUT_MS = 5000
# PostgreSQL: how long connecting may take, how long a served statement may run (the
# gunicorn worker timeout is 30 s), and how long it may wait for a row lock (as SQLite's
# busy timeout).
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5
POSTGRES_STATEMENT_TIMEOUT_MS = 25_000
POSTGRES_LOCK_TIMEOUT_MS = SQLITE_BUSY_TIMEOUT_MS
# A request waits this long for a pooled connection when every one is in use.
POOL_TIMEOUT_SECONDS = 5
DEFAULT_POOL_SIZE = 16
# A readiness probe waits this long for the write lock before calling the database stuck.
PROBE_BUSY_TIMEOUT_MS = 1000
# After a checkpoint the WAL file is cut back to this size; a long read can make it grow far
# beyond (no checkpoint can pass a reader), and without a limit it would stay that large.
SQLITE_JOURNAL_SIZE_LIMIT_BYTES = 32 * 1024 * 1024
WRITE_OPTION = "webhook_service_write"
_FILE_IDENTITY = "webhook_service_file_identity"
# PostgreSQL's SQLSTATE for a statement cancelled by statement_timeout.
QUERY_CANCELED = "57014"
# SQLite calls the progress handler every this many virtual machine instructions (~1 ms).
PROGRESS_INSTRUCTIONS = 20_000
# The monotonic time by which the statements of the current request must finish, if any.
_query_deadline: ContextVar[float | None] = ContextVar("webhook_service_query_deadline", default=None)


class QueryBudgetExceeded(Exception):
    """A read ran past its time budget and was stopped."""


@contextmanager
def query_budget(seconds: float) -> Iterator[None]:
    """Stop any statement run inside this block once `seconds` have passed.

    Raises QueryBudgetExceeded when one was stopped. The deadline lives in a context
    variable, so each request (thread) has its own on pooled connections.
    """
    token = _query_deadline.set(time.monotonic() + seconds)
    try:
        yield
    except OperationalError as error:
        # SQLite: the progress handler interrupted it; PostgreSQL: statement_timeout fired.
        if "interrupted" in str(error.orig) or getattr(error.orig, "sqlstate", None) == QUERY_CANCELED:
            raise QueryBudgetExceeded(f"stopped after {seconds:g} s") from None
        raise
    finally:
        _query_deadline.reset(token)


def _remaining_budget_ms() -> int | None:
    deadline = _query_deadline.get()
    if deadline is None:
        return None
    return max(1, int((deadline - time.monotonic()) * 1000))


def _past_deadline() -> int:
    deadline = _query_deadline.get()
    return 1 if deadline is not None and time.monotonic() > deadline else 0


class DatabaseFileChanged(OSError):
    """The SQLite file was removed or replaced since this connection opened it."""


def describe_database_error(exc: SQLAlchemyError | OSError) -> str:
    """The driver's reason on one line, without the statement or its parameters."""
    cause = getattr(exc, "orig", None) or exc
    if cause is not exc:
        # psycopg's messages run over several lines ("...\n\tIs the server running...").
        return f"{type(cause).__name__}: {' '.join(str(cause).split())}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return type(exc).__name__


def database_url_from_setting(value: str) -> str:
    """Turn DATABASE_URL (a SQLAlchemy URL or a bare file path) into a URL; raises ValueError."""
    text = value.strip()
    if "://" not in text:
        if text in ("", ":memory:"):
            raise ValueError("an in-memory or empty SQLite path would lose every message at restart")
        return f"sqlite:///{text}"
    try:
        url = make_url(text)
    except ArgumentError:
        # Not echoed: it may hold a password.
        raise ValueError(
            "not a database URL; expected sqlite:////path/to/file.db, a file path, or "
            "postgresql://user:password@host:5432/db"
        ) from None
    if url.get_backend_name() not in SUPPORTED_DIALECTS:
        raise ValueError(f"unsupported database {url.get_backend_name()!r}; supported: sqlite, postgresql")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError("an in-memory SQLite database would lose every message at restart; name a file")
    if url.get_backend_name() == "postgresql":
        if url.drivername not in ("postgresql", POSTGRES_DRIVERNAME):
            raise ValueError(
                f"unsupported PostgreSQL driver {url.get_driver_name()!r}: use postgresql:// or postgresql+psycopg://"
            )
        if not url.database:
            raise ValueError("a PostgreSQL URL must name the database: postgresql://user:password@host:5432/db")
        return url.set(drivername=POSTGRES_DRIVERNAME).render_as_string(hide_password=False)
    return text


def create_database_engine(url: str, *, create: bool = True, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """Create an engine with the durability settings the service relies on.

    With `create` (migrations), a missing SQLite file and its parent folder are made; raises
    OSError when that is impossible. Without it (serving), the file must exist and be
    writable: a removed or read-only file is a connection error, never a silent new empty
    database or a read-only fallback. On PostgreSQL, serving connections carry statement
    and lock timeouts (migrations do not: building an index over millions of rows takes
    longer), and the pool holds at most `pool_size` connections: one per worker thread.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database).absolute()
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        mode = "rwc" if create else "rw"
        file_uri = f"file:{quote(str(path))}?mode={mode}"

        def connect() -> sqlite3.Connection:
            # No driver-side transaction handling: SQLAlchemy emits BEGIN for reads too, so a
            # page and its total come from one snapshot.
            return sqlite3.connect(file_uri, uri=True, isolation_level=None, timeout=5.0, check_same_thread=False)

        # The pool is named: from a bare "sqlite://" URL SQLAlchemy would pick the in-memory
        # database's pool, which closes connections other threads are still using.
        engine = create_engine(
            "sqlite://", creator=connect, poolclass=QueuePool, pool_size=5, max_overflow=20, hide_parameters=True
        )
        event.listen(engine, "connect", lambda dbapi, record: _configure_sqlite_connection(dbapi, record, path))
        event.listen(engine, "checkout", lambda dbapi, record, proxy: _check_same_file(record.info, path))
        event.listen(engine, "begin", _begin_sqlite_transaction)
        return engine
    return _create_postgres_engine(parsed, serving=not create, pool_size=pool_size)


def _create_postgres_engine(url, *, serving: bool, pool_size: int) -> Engine:
    options = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS, "application_name": "webhook-service"}
    if serving:
        options["options"] = (
            f"-c statement_timeout={POSTGRES_STATEMENT_TIMEOUT_MS:d} -c lock_timeout={POSTGRES_LOCK_TIMEOUT_MS:d}"
        )
    engine = create_engine(
        url.set(drivername=POSTGRES_DRIVERNAME),
        hide_parameters=True,
        # A connection the server closed (a restart, a failover) is noticed at checkout and
        # replaced, instead of failing the request that drew it.
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        connect_args=options,
    )
    event.listen(engine, "begin", _begin_postgres_transaction)
    return engine


def _begin_postgres_transaction(connection) -> None:
    # A read under a time budget: the server cancels its statements once the budget is spent.
    remaining = _remaining_budget_ms()
    if remaining is not None:
        connection.exec_driver_sql("SELECT set_config('statement_timeout', %(ms)s, true)", {"ms": str(remaining)})


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return (status.st_dev, status.st_ino)


def _check_same_file(info: dict, path: Path) -> None:
    # A pooled connection to a file that was since deleted or replaced (a backup restored
    # underneath the service) would go on reading and writing the old inode, and every
    # message acknowledged there would be gone at the next start.
    if info.get(_FILE_IDENTITY) != _file_identity(path):
        raise DisconnectionError("the database file was replaced or removed")


def confirm_same_file(conn: Connection) -> None:
    """Raise DatabaseFileChanged if the SQLite file behind `conn` is no longer at its path."""
    info = conn.connection.info
    path = info.get("webhook_service_path")
    if path is not None and info.get(_FILE_IDENTITY) != _file_identity(path):
        conn.invalidate()
        raise DatabaseFileChanged("the database file was replaced or removed while the service ran")


@contextmanager
def _busy_timeout(conn: Connection, milliseconds: int | None) -> Iterator[None]:
    # Set on the driver's connection, outside SQLAlchemy's transaction bookkeeping, and put
    # back for the connection's next user.
    if milliseconds is None or conn.dialect.name != "sqlite":
        yield
        return
    conn.connection.driver_connection.execute(f"PRAGMA busy_timeout={milliseconds:d}")
    try:
        yield
    finally:
        if not conn.invalidated:
            conn.connection.driver_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")


@contextmanager
def _discarded_on_failure(conn: Connection) -> Iterator[None]:
    # A connection whose write failed is not reused: SQLite opens a write-protected file
    # read-only and keeps it so even after the file is writable again.
    try:
        yield
    except OperationalError:
        conn.invalidate()
        raise


def _configure_sqlite_connection(dbapi_connection, record, path: Path) -> None:
    record.info[_FILE_IDENTITY] = _file_identity(path)
    record.info["webhook_service_path"] = path
    dbapi_connection.set_progress_handler(_past_deadline, PROGRESS_INSTRUCTIONS)
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers run beside the writer; FULL fsyncs the WAL on every commit, so an
        # acknowledged message survives a power loss, not just a process crash.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
        cursor.execute(f"PRAGMA journal_size_limit={SQLITE_JOURNAL_SIZE_LIMIT_BYTES:d}")
    finally:
        cursor.close()


def _begin_sqlite_transaction(connection) -> None:
    # Writers take the write lock up front: a deferred transaction that touches the FTS5
    # index reads before it writes, and SQLite then fails with "database is locked" at
    # once instead of waiting out the busy timeout when another worker has committed.
    statement = "BEGIN IMMEDIATE" if connection.get_execution_options().get(WRITE_OPTION) else "BEGIN"
    connection.exec_driver_sql(statement)


class Database:
    """Owns the engine of the current process.

    A forked worker must not reuse its parent's connections, so the engine is (re)created
    lazily whenever the process id changes.
    """

    def __init__(self, url: str, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.url = url
        self.pool_size = pool_size
        self._key = database_key(url)
        self._engine: Engine | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._thread_writer_lock = threading.Lock()
        parsed = make_url(url)
        self._writer_lock_path = f"{parsed.database}-writer.lock" if parsed.get_backend_name() == "sqlite" else None
        self._lock_fd: int | None = None
        self._lock_fd_pid: int | None = None

    @property
    def engine(self) -> Engine:
        """The engine for this process (the database must exist: migrations create it)."""
        pid = os.getpid()
        if self._engine is None or self._pid != pid:
            with self._lock:
                if self._engine is None or self._pid != pid:
                    if self._engine is not None:
                        self._engine.dispose(close=False)
                    self._engine = create_database_engine(self.url, create=False, pool_size=self.pool_size)
                    self._pid = pid
        return self._engine

    @contextmanager
    def write_transaction(self, *, probe: bool = False) -> Iterator[Connection]:
        """A transaction that holds the write lock from its start; commits on success.

        Raises DatabaseFileChanged when, after the commit, the file is no longer the one
        written: the caller must not acknowledge what it wrote. A failure is remembered for
        readiness (shared by all workers) and a commit clears it. A `probe` (readiness's own
        write) waits at most about a second for the lock, where deliveries wait five, and
        its failure is not remembered: it speaks for itself and is tried again next time.
        """
        with (
            self._writer_turn(),
            self._recording_write_health(failures=not probe),
            self.engine.connect() as conn,
            _busy_timeout(conn, PROBE_BUSY_TIMEOUT_MS if probe else None),
        ):
            conn.execution_options(**{WRITE_OPTION: True})
            with _discarded_on_failure(conn), conn.begin():
                if probe and conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(
                        "SELECT set_config('lock_timeout', %(ms)s, true)", {"ms": str(PROBE_BUSY_TIMEOUT_MS)}
                    )
                yield conn
            confirm_same_file(conn)

    def last_write_failure(self) -> tuple[str, float] | None:
        """Why the latest write transaction of any worker failed and how long ago, or None
        when the latest one committed."""
        return WRITE_HEALTH.last_failure(self._key)

    @contextmanager
    def _recording_write_health(self, failures: bool) -> Iterator[None]:
        try:
            yield
        except (SQLAlchemyError, OSError) as error:
            if failures:
                WRITE_HEALTH.record_failure(self._key, describe_database_error(error))
            raise
        WRITE_HEALTH.record_success(self._key)

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        # SQLite has one writer at a time and its busy handler polls with growing sleeps, so
        # under load a waiting writer loses to whoever commits next and waits many ms.
        # Queueing writers on a thread lock, then on a file lock shared by every process,
        # hands the turn over as soon as it is released.
        if self._writer_lock_path is None:
            yield
            return
        with self._thread_writer_lock:
            fd = self._writer_lock_fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _writer_lock_fd(self) -> int:
        pid = os.getpid()
        if self._lock_fd is None or self._lock_fd_pid != pid:
            self._lock_fd = os.open(self._writer_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_fd_pid = pid
        return self._lock_fd

    @contextmanager
    def read_transaction(self) -> Iterator[Connection]:
        """A read-only transaction: every query in it sees one snapshot."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        """Close every pooled connection of this process, and the writer lock file."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
            if self._lock_fd is not None and self._lock_fd_pid == os.getpid():
                os.close(self._lock_fd)
            self._lock_fd = None
