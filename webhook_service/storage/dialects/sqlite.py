"""SQLite: one file on one host, one writer at a time, FTS5 trigrams for search."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Connection, Engine, Executable, create_engine, event, false, func, literal_column, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.pool import QueuePool

from webhook_service.storage.dialects.base import (
    LOCK_WAIT_MS,
    LOCK_WAIT_OPTION,
    WRITE_OPTION,
    BackupFailed,
    Dialect,
    ForwarderLock,
    InsertedRows,
)
from webhook_service.storage.dialects.budget import WATCHDOG, current_deadline, past_deadline
from webhook_service.storage.dialects.search import SearchPlan, most_collected
from webhook_service.storage.tables import MESSAGE_COLUMNS, messages, messages_text_index, text_grams

# After a checkpoint the WAL file is cut back to this size; a long read can make it grow far
# beyond (no checkpoint can pass a reader), and without a limit it would stay that large.
JOURNAL_SIZE_LIMIT_BYTES = 32 * 1024 * 1024
# Each connection's page cache (SQLite's default is 2 MiB). A worker holds up to 25 pooled
# connections, so this bounds what their caches keep after many expensive reads at once to
# 12.5 MiB; the file's pages stay in the kernel's cache either way. bench/search_memory.py: 50
# concurrent expensive searches on 200,000 messages left a worker 32 MB larger with the
# default, 14 MB with this (queries and ingestion within the run-to-run noise).
CACHE_KIB_PER_CONNECTION = 512
# ... but a transaction that removes thousands of messages touches more pages than that, and
# spills them to the WAL before its commit and reads them back: in process, batches of 10,000
# removed 29,500 a second with 512 KiB, 35,000 with this, which it has until its commit.
LARGE_TRANSACTION_CACHE_KIB = 64 * 1024
# SQLite calls the progress handler every this many virtual machine instructions (~1 ms).
PROGRESS_INSTRUCTIONS = 20_000
# The trigram index answers substrings of at least three characters; shorter ones scan.
TEXT_INDEX_MIN_CHARS = 3
# A needle of up to this many characters is one phrase to the text index, which finds
# exactly the texts holding it. A phrase costs its length times the texts holding all its
# trigrams: `you you you ...` of 64 characters was stopped at the 2 s budget at 10,000,000
# messages (4.6 million texts hold its four trigrams); narrowed by its first 16 characters
# it answers in 0.66 s. A longer needle is narrowed by its first and last 16 characters,
# then tested in each text.
PHRASE_MAX_CHARS = 16
# When those pieces are common, a needle up to this long is still counted as one phrase.
COUNTED_PHRASE_MAX_CHARS = 64
# A needle shorter than a trigram is looked up through at most this many trigrams that hold
# it (an FTS query of that many phrases); held by more, its texts are found in one pass.
MAX_TRIGRAMS_OF_SHORT_NEEDLE = 64
# Page found by walking the order's index when texts² > this × messages (see search_plan).
WALK_OVER_SORT = 5
BACKUP_PAGES_PER_STEP = 1024

_FILE_IDENTITY = "webhook_service_file_identity"
_PATH = "webhook_service_path"

# The batch's statements run on the driver's connection inside the serialized write
# transaction, where SQLAlchemy's own per-statement work cost as much as SQLite's
# (ingestion fell 19% that way, 4% this way). Only placeholders vary with the batch size.
_INSERT_PREFIX = f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) VALUES "
_ROW_PLACEHOLDERS = "(" + ", ".join("?" * len(MESSAGE_COLUMNS)) + ")"
_INSERT_SUFFIX = " ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
_RESERVE_POSITIONS = (
    "UPDATE message_totals SET last_position = last_position + ? WHERE id = 1 RETURNING last_position - ?"
)
# Writers never overlap here, so "known before" can be read up front.
_KNOWN_SENDERS = "SELECT from_msisdn FROM sender_counts WHERE from_msisdn IN (SELECT value FROM json_each(?))"
_ADD_TO_SENDER = (
    "INSERT INTO sender_counts (from_msisdn, message_count) VALUES (?, ?) "
    "ON CONFLICT (from_msisdn) DO UPDATE SET message_count = message_count + excluded.message_count"
)
_ADD_TO_TOTALS = (
    "UPDATE message_totals SET total_messages = total_messages + ?, senders_count = senders_count + ? WHERE id = 1"
)


@contextmanager
def _driver_errors(statement: str) -> Iterator[None]:
    """The driver's errors on a raw connection, raised as SQLAlchemy raises them elsewhere."""
    try:
        yield
    except sqlite3.Error as error:
        raise DBAPIError.instance(statement, None, error, sqlite3.Error) from error


class DatabaseFileChanged(OSError):
    """The SQLite file was removed or replaced since this connection opened it."""


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return (status.st_dev, status.st_ino)


def _fd_identity(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return (status.st_dev, status.st_ino)


class _OpenedConnection(sqlite3.Connection):
    """A connection that knows which file it opened (its device and inode)."""

    opened_identity: tuple[int, int] | None = None


class SQLiteDialect(Dialect):
    """A SQLite file in WAL mode, every commit fsynced."""

    def __init__(self, url: URL) -> None:
        super().__init__(url)
        self.path = Path(url.database).absolute()
        self._insert_statements: dict[int, str] = {}
        self._compiled: dict[Executable, tuple[str, tuple[str, ...], dict]] = {}
        self._thread_writer_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._lock_fd_pid: int | None = None
        self._journal_owner_noted: dict | None = None

    @property
    def writer_lock_path(self) -> Path:
        """The file every process's writers lock in turn, beside the database."""
        return self.path.with_name(self.path.name + "-writer.lock")

    def create_engine(self, *, serving: bool, pool_size: int) -> Engine:
        """Without `serving` (migrations) a missing file and its folder are made (OSError when
        impossible); serving, the file must exist and be writable: a removed or read-only
        file is a connection error, never a silent new empty database or a read-only one."""
        if not serving:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        file_uri = f"file:{quote(str(self.path))}?mode={'rw' if serving else 'rwc'}"

        def connect() -> sqlite3.Connection:
            opening = _file_identity(self.path)
            # No driver-side transaction handling: SQLAlchemy emits BEGIN for reads too, so a
            # page and its total come from one snapshot.
            connection = sqlite3.connect(
                file_uri,
                uri=True,
                isolation_level=None,
                timeout=LOCK_WAIT_MS / 1000,
                check_same_thread=False,
                factory=_OpenedConnection,
            )
            try:
                if opening is None and not serving:
                    opening = _file_identity(self.path)  # made by this connection (mode rwc)
                # Checked once the file is open and before SQLite reads it (its -wal and -shm
                # are opened at the first read): a file moved in while it was being opened
                # is refused, whatever the files looked like before.
                self._refuse_journal_of_another_file(opening)
            except sqlite3.Error:
                connection.close()
                raise
            connection.opened_identity = opening
            return connection

        # The pool is named: from a bare "sqlite://" URL SQLAlchemy would pick the in-memory
        # database's pool, which closes connections other threads are still using.
        engine = create_engine(
            "sqlite://", creator=connect, poolclass=QueuePool, pool_size=5, max_overflow=20, hide_parameters=True
        )
        event.listen(engine, "connect", self._configure_connection)
        event.listen(engine, "checkout", lambda dbapi, record, proxy: self._check_same_file(record.info))
        event.listen(engine, "begin", _begin_transaction)
        return self.attach(engine)

    def _configure_connection(self, dbapi_connection, record) -> None:
        record.info[_FILE_IDENTITY] = dbapi_connection.opened_identity
        record.info[_PATH] = self.path
        dbapi_connection.set_progress_handler(past_deadline, PROGRESS_INSTRUCTIONS)
        cursor = dbapi_connection.cursor()
        try:
            # WAL lets readers run beside the writer; FULL fsyncs the WAL on every commit, so
            # an acknowledged message survives a power loss, not just a process crash.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={LOCK_WAIT_MS:d}")
            cursor.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT_BYTES:d}")
            cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB_PER_CONNECTION:d}")
        finally:
            cursor.close()
        self._remember_journal_owner()

    # A WAL database is three files: the database, its -wal (recent commits) and its -shm
    # (the index of the -wal, shared by every connection). SQLite pairs them by name only: a
    # database file moved into place (a backup restored while the service runs) beside the
    # -wal and -shm of the file it replaced is read through them, and the first checkpoint
    # writes the old file's pages into it. So the service notes which -wal and -shm it saw
    # beside which database file (a small record beside them, for every process), and opens
    # no connection while the journal files at the path are those of another database file.

    @property
    def journal_owner_path(self) -> Path:
        """The record of which database file the -wal and -shm beside it belong to."""
        return self.path.with_name(self.path.name + "-journal-owner")

    def _journal_files(self) -> dict[str, tuple[int, int] | None]:
        return {
            "database": _file_identity(self.path),
            "wal": _file_identity(self.path.with_name(self.path.name + "-wal")),
            "shm": _file_identity(self.path.with_name(self.path.name + "-shm")),
        }

    def _refuse_journal_of_another_file(self, opened: tuple[int, int] | None) -> None:
        # `opened`: the file at the path just before a connection opened it.
        current = self._journal_files()
        if opened is None or current["database"] != opened:
            raise sqlite3.OperationalError("the database file was replaced or removed while it was being opened")
        try:
            recorded = json.loads(self.journal_owner_path.read_text())
            owner = tuple(recorded["database"])
        except (OSError, ValueError, KeyError, TypeError):
            return  # no record (or a torn one): nothing is known against the files there
        if current["database"] == owner:
            return
        stale = [
            f"{self.path.name}-{kind}"
            for kind in ("wal", "shm")
            if current[kind] is not None and list(current[kind]) == recorded.get(kind)
        ]
        if stale:
            raise sqlite3.OperationalError(
                f"the database file was replaced while {' and '.join(stale)} of the file before it "
                "are still beside it: remove them to use the new file"
            )

    def _remember_journal_owner(self) -> None:
        current = self._journal_files()
        if current["database"] is None or current == self._journal_owner_noted:
            return
        record = self.journal_owner_path.with_name(f".{self.journal_owner_path.name}.{os.getpid()}")
        try:
            record.write_text(json.dumps({kind: identity and list(identity) for kind, identity in current.items()}))
            record.replace(self.journal_owner_path)
        except OSError:
            record.unlink(missing_ok=True)
            return  # a full or read-only disk: the next connection tries again
        self._journal_owner_noted = current

    def _check_same_file(self, info: dict) -> None:
        # A pooled connection to a file that was since deleted or replaced (a backup restored
        # underneath the service) would go on reading and writing the old inode, and every
        # message acknowledged there would be gone at the next start.
        if info.get(_FILE_IDENTITY) != _file_identity(self.path):
            raise DisconnectionError("the database file was replaced or removed")

    def confirm_same_database(self, conn: Connection) -> None:
        """Raise DatabaseFileChanged if the file written is no longer at its path."""
        if conn.connection.info.get(_FILE_IDENTITY) != _file_identity(self.path):
            conn.invalidate()
            raise DatabaseFileChanged("the database file was replaced or removed while the service ran")

    @contextmanager
    def writer_turn(self) -> Iterator[None]:
        # SQLite has one writer at a time and its busy handler polls with growing sleeps, so
        # under load a waiting writer loses to whoever commits next and waits many ms.
        # Queueing writers on a thread lock, then on a file lock shared by every process,
        # hands the turn over as soon as it is released.
        with self._thread_writer_lock:
            fd = self._writer_lock_fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A stopping server removes the file when no one holds it (remove_idle_files):
            # the turn is taken on the file at the path, not on a removed one.
            while _file_identity(self.writer_lock_path) != _fd_identity(fd):
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                self._lock_fd = None
                fd = self._writer_lock_fd()
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _writer_lock_fd(self) -> int:
        pid = os.getpid()
        if self._lock_fd is None or self._lock_fd_pid != pid:
            self._lock_fd = os.open(self.writer_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_fd_pid = pid
        return self._lock_fd

    def remove_idle_files(self) -> None:
        # Removed only while locked here: a writer that opened it meanwhile finds, once it
        # holds the lock, that the path has no file or another one, and opens that instead.
        try:
            fd = os.open(self.writer_lock_path, os.O_RDWR)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _file_identity(self.writer_lock_path) == _fd_identity(fd):
                # With no writer left, the journal files are gone too (the last connection
                # checkpointed and removed them), and so is what the record says of them.
                self.journal_owner_path.unlink(missing_ok=True)
                self.writer_lock_path.unlink()
        except OSError:
            pass  # held by a running command line: it stays, as harmless as before
        finally:
            os.close(fd)

    def forwarder_lock(self, destination: str) -> ForwarderLock:
        # One host: one forwarder serves a destination, and at its start it may take over
        # every lease a killed predecessor left.
        return ForwarderLock(self.path.with_name(f"{self.path.name}-forward-{destination}.lock"))

    def close(self) -> None:
        if self._lock_fd is not None and self._lock_fd_pid == os.getpid():
            os.close(self._lock_fd)
        self._lock_fd = None

    def budget_exceeded(self, error: OperationalError) -> bool:
        # The progress handler returned true, or the watchdog interrupted: SQLite stopped the statement.
        return "interrupted" in str(error.orig)

    @contextmanager
    def stopped_at_deadline(self, conn: Connection) -> Iterator[None]:
        # The progress handler sees the deadline only between steps of 20,000 instructions,
        # each of which needs the GIL: the watchdog interrupts at the deadline itself.
        deadline = current_deadline()
        if deadline is None:
            yield
            return
        ticket = WATCHDOG.watch(deadline, conn.connection.dbapi_connection.interrupt)
        try:
            yield
        finally:
            WATCHDOG.release(ticket)

    @contextmanager
    def large_transaction(self, conn: Connection) -> Iterator[None]:
        driver = conn.connection.driver_connection
        driver.execute(f"PRAGMA cache_size=-{LARGE_TRANSACTION_CACHE_KIB:d}")
        try:
            yield
        finally:
            # A transaction that failed in the database had its connection discarded (closed).
            with suppress(sqlite3.ProgrammingError):
                driver.execute(f"PRAGMA cache_size=-{CACHE_KIB_PER_CONNECTION:d}")

    @property
    def insert(self):
        return sqlite.insert

    def one_of(self, column, values):
        return column.in_(select(func.json_each(json.dumps(values)).table_valued("value").c.value))

    def reserve_positions(self, conn: Connection, count: int) -> int:
        """Positions in commit order: every write transaction holds SQLite's one write lock
        from its BEGIN IMMEDIATE to its commit, so a transaction that takes positions after
        another also commits after it. The high-water mark lives in message_totals, so a
        position is never handed out twice, also after the newest messages are purged (a
        rowid alone would be: SQLite gives max(rowid) + 1)."""
        driver = conn.connection.driver_connection
        with _driver_errors(_RESERVE_POSITIONS):
            return driver.execute(_RESERVE_POSITIONS, (count, count)).fetchone()[0]

    def insert_if_new(self, conn: Connection, rows: list[dict]) -> InsertedRows:
        parameters = [row[column] for row in rows for column in MESSAGE_COLUMNS]
        driver = conn.connection.driver_connection
        statement = self._insert_statement(len(rows))
        with _driver_errors(statement):
            return {message_id for (message_id,) in driver.execute(statement, parameters)}

    def _insert_statement(self, rows: int) -> str:
        statement = self._insert_statements.get(rows)
        if statement is None:
            statement = _INSERT_PREFIX + ", ".join([_ROW_PLACEHOLDERS] * rows) + _INSERT_SUFFIX
            self._insert_statements[rows] = statement
        return statement

    def execute_many(self, conn: Connection, statement: Executable, rows: list[dict]) -> None:
        # On the driver's connection, like the batch insert: for the hundreds of gram counts
        # a batch changes, SQLAlchemy's per-row work took longer than SQLite's (1.4 vs 0.6 ms).
        compiled = self._compiled.get(statement)
        if compiled is None:
            done = statement.compile(dialect=conn.dialect)
            compiled = self._compiled[statement] = (done.string, tuple(done.positiontup), done.params)
        sql, names, constants = compiled
        parameters = [tuple(row[name] if name in row else constants[name] for name in names) for row in rows]
        with _driver_errors(sql):
            conn.connection.driver_connection.executemany(sql, parameters)

    def add_to_counters(self, conn: Connection, added: Counter[str]) -> None:
        driver = conn.connection.driver_connection
        # A sender not known before this batch adds one to senders_count.
        with _driver_errors(_ADD_TO_SENDER):
            known = driver.execute(_KNOWN_SENDERS, (json.dumps(list(added)),)).fetchall()
            driver.executemany(_ADD_TO_SENDER, list(added.items()))
            driver.execute(_ADD_TO_TOTALS, (sum(added.values()), len(added) - len(known)))

    def search_plan(
        self, conn: Connection, folded: str, texts: int | None, total: int, *, alone: bool = False
    ) -> SearchPlan:
        """The text index finds a needle of three or more characters as a phrase of its
        trigrams at consecutive positions: exactly the texts holding it, and it counts them.

        When many texts hold the needle, messages are read in page order and their texts
        tested (51 matches are a few thousand rows away, at most). When fewer do, their rowids are
        collected first and the page is found by walking the order's index, testing each
        entry's rowid against them (no table row is read until it is on the page), or, when
        very few do, by reading just those rows and sorting them. A needle shorter than a
        trigram that few texts hold is found through the trigrams that contain it."""
        contains = func.instr(messages.c.text_folded, folded) > 0
        most = most_collected(total)
        if len(folded) < TEXT_INDEX_MIN_CHARS:
            if texts > most:
                return SearchPlan([contains], known_count=texts)
            rowids = self._short_needle_rowids(conn, folded, texts)
            if rowids is not None:
                return self._found_among(rowids, total, contains, exact=True)
            return SearchPlan([messages.c.id.in_(select(messages.c.id).where(contains))], known_count=texts)
        exact = len(folded) <= PHRASE_MAX_CHARS
        # Quoted FTS strings: operators and punctuation in the input stay literal. A longer
        # needle is narrowed by its first and last PHRASE_MAX_CHARS characters, then tested.
        whole = _phrase(folded)
        pieces = [folded] if exact else sorted({folded[:PHRASE_MAX_CHARS], folded[-PHRASE_MAX_CHARS:]})
        query = " AND ".join(_phrase(piece) for piece in pieces)
        if texts is None or texts <= most:
            # The rowids, read once for the whole request, unless there are more than that.
            rowids = _index_rowids(conn, query, most + 1)
            if len(rowids) <= most:
                return self._found_among(rowids, total, contains, exact)
        if texts is None and len(folded) <= COUNTED_PHRASE_MAX_CHARS:
            # Common pieces: the whole needle as one phrase is still an exact count.
            matched = messages_text_index.c.text_folded.match(whole)
            texts = conn.execute(select(func.count()).select_from(messages_text_index).where(matched)).scalar_one()
        return SearchPlan([contains], known_count=texts)

    def _short_needle_rowids(self, conn: Connection, folded: str, texts: int) -> list[int] | None:
        """The rowids of the `texts` texts holding a needle shorter than a trigram, from the
        index: a text of three or more characters holds it exactly when it holds one of the
        stored trigrams that contain it (the gram counts list them), and shorter texts are in
        their own small index. None when too many trigrams hold it to ask for them at once."""
        windows = (
            conn.execute(
                select(text_grams.c.gram)
                .where(
                    func.length(text_grams.c.gram) == TEXT_INDEX_MIN_CHARS, func.instr(text_grams.c.gram, folded) > 0
                )
                .limit(MAX_TRIGRAMS_OF_SHORT_NEEDLE + 1)
            )
            .scalars()
            .all()
        )
        if len(windows) > MAX_TRIGRAMS_OF_SHORT_NEEDLE:
            return None
        found = set()
        if windows:
            query = " OR ".join(_phrase(window) for window in windows)
            found.update(_index_rowids(conn, query, texts + 1))
        found.update(
            conn.execute(
                select(messages.c.id).where(
                    # A literal, not a parameter: SQLite matches it to the partial index's condition.
                    func.length(messages.c.text_folded) < literal_column(str(TEXT_INDEX_MIN_CHARS)),
                    func.instr(messages.c.text_folded, folded) > 0,
                )
            )
            .scalars()
            .all()
        )
        # Both ways together find every text the gram counts say holds the needle.
        return sorted(found) if len(found) == texts else None

    def _found_among(self, rowids: list[int], total: int, contains, exact: bool) -> SearchPlan:
        """The plan for the texts among `rowids` (of `total` messages): all of them hold the
        needle when `exact`, else each is tested too."""
        if not rowids:
            return SearchPlan([false()], known_count=0)
        # Walking the index reads about 51 * total / texts entries; sorting reads `texts` rows,
        # each about ten times the cost of an entry (7,000 matches among 1,000,000 messages:
        # 3.6 ms to walk to a page, 25 ms to read and sort them).
        texts = len(rowids)
        rowid = messages.c.id + 0 if texts * texts > WALK_OVER_SORT * total else messages.c.id
        if exact:
            return SearchPlan([self.one_of(rowid, rowids)], known_count=texts)
        return SearchPlan([self.one_of(rowid, rowids), contains])

    def backup(self, destination: Path, progress: Callable[[int, int], None] | None = None) -> None:
        if not self.path.exists():
            raise BackupFailed(f"no database at {self.path}")
        try:
            source = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True)
        except sqlite3.Error as error:
            raise BackupFailed(f"cannot open {self.path}: {error}") from None
        try:
            target = sqlite3.connect(destination)
        except sqlite3.Error as error:
            source.close()
            raise BackupFailed(f"cannot create {destination}: {error}") from None
        try:
            # SQLite's online backup: copies page by page and restarts a step when a writer
            # changed pages meanwhile, so the copy is one consistent state.
            source.backup(
                target,
                pages=BACKUP_PAGES_PER_STEP,
                progress=None if progress is None else lambda _s, remaining, total: progress(total - remaining, total),
            )
            target.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as error:
            target.close()
            destination.unlink(missing_ok=True)
            raise BackupFailed(str(error)) from None
        except BaseException:
            target.close()
            destination.unlink(missing_ok=True)
            raise
        finally:
            source.close()
        target.close()


# On the driver's connection: for thousands of rowids SQLAlchemy's per-row work cost more than the query.
_INDEX_ROWIDS = "SELECT rowid FROM messages_text_fts WHERE messages_text_fts MATCH ? LIMIT ?"


def _phrase(text: str) -> str:
    """`text` as one quoted FTS5 string: every character literal."""
    return '"' + text.replace('"', '""') + '"'


def _index_rowids(conn: Connection, query: str, limit: int) -> list[int]:
    """The rowids of up to `limit` texts the text index finds for an FTS5 `query`."""
    with _driver_errors(_INDEX_ROWIDS):
        return [rowid for (rowid,) in conn.connection.driver_connection.execute(_INDEX_ROWIDS, (query, limit))]


def _begin_transaction(connection) -> None:
    # Writers take the write lock up front: a deferred transaction that touches the FTS5
    # index reads before it writes, and SQLite then fails with "database is locked" at
    # once instead of waiting out the busy timeout when another worker has committed.
    options = connection.get_execution_options()
    if not options.get(WRITE_OPTION):
        connection.exec_driver_sql("BEGIN")
        return
    lock_wait_ms = options.get(LOCK_WAIT_OPTION)
    if lock_wait_ms is None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        return
    # The lock is waited for at BEGIN IMMEDIATE alone; the connection's next user waits as long as usual.
    driver = connection.connection.driver_connection
    driver.execute(f"PRAGMA busy_timeout={int(lock_wait_ms):d}")
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        driver.execute(f"PRAGMA busy_timeout={LOCK_WAIT_MS:d}")
