"""Engine setup: URL parsing, SQLite durability settings, and one engine per process."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SUPPORTED_DIALECTS = ("sqlite",)
SQLITE_BUSY_TIMEOUT_MS = 5000
WRITE_OPTION = "webhook_service_write"


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
        raise ValueError(f"not a database URL: {text!r}") from None
    if url.get_backend_name() not in SUPPORTED_DIALECTS:
        raise ValueError(f"unsupported database {url.get_backend_name()!r}; supported: sqlite")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError("an in-memory SQLite database would lose every message at restart; name a file")
    return text


def create_database_engine(url: str) -> Engine:
    """Create an engine with the durability settings the service relies on.

    For SQLite the file's parent folder is created; raises OSError when that is impossible.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # The driver's own transaction handling is switched off so that BEGIN is emitted by
        # SQLAlchemy for reads too: a page and its total then come from one snapshot.
        engine = create_engine(parsed, hide_parameters=True, connect_args={"isolation_level": None, "timeout": 5.0})
        event.listen(engine, "connect", _configure_sqlite_connection)
        event.listen(engine, "begin", _begin_sqlite_transaction)
        return engine
    return create_engine(parsed, hide_parameters=True, pool_pre_ping=True)


def _configure_sqlite_connection(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers run beside the writer; FULL fsyncs the WAL on every commit, so an
        # acknowledged message survives a power loss, not just a process crash.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
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

    def __init__(self, url: str) -> None:
        self.url = url
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
        """The engine for this process; raises OSError if the database folder cannot be made."""
        pid = os.getpid()
        if self._engine is None or self._pid != pid:
            with self._lock:
                if self._engine is None or self._pid != pid:
                    if self._engine is not None:
                        self._engine.dispose(close=False)
                    self._engine = create_database_engine(self.url)
                    self._pid = pid
        return self._engine

    @contextmanager
    def write_transaction(self) -> Iterator[Connection]:
        """A transaction that holds the write lock from its start; commits on success."""
        with self._writer_turn(), self.engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

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
