"""Retention: messages stored longer ago than RETENTION_DAYS are removed by the service.

Every worker of every host runs a RetentionRunner; a run is taken by one process at a time
per database (a lease in maintenance_runs, renewed with every batch, so a process that dies
holding it is replaced once the lease runs out). A run removes the messages stored longest
ago first, in batches of its own short write transactions, and after each batch lets the
writers have the database for as long as the batch took. The read model uncounts what each
batch removes in the same transaction, and deliveries still owed for a removed message end.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import Connection, delete, func, or_, select, update

from webhook_service.archive.stores import ArchiveFailed, ArchiveStore
from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.engine import DATABASE_ERRORS, Database, describe_database_error
from webhook_service.storage.messages import PAGE_COLUMNS, delete_counted, message_document, stored_message
from webhook_service.storage.tables import forward_deliveries, maintenance_runs, messages
from webhook_service.timestamps import iso_from_epoch

RETENTION = "retention"
COMPLETED = "completed"
STOPPED = "stopped: the process was stopping"
DAY_SECONDS = 86_400
# Messages read (and archived) at a time, then removed in batches.
CHUNK = 10_000
# A run's lease: renewed by every batch, so only a run that stopped (its process died) lets
# it lapse, and another process takes over after this long.
LEASE_SECONDS = 120
# How soon after a worker starts it looks, how often it looks again, and how long after a
# run started the next one is due (a failed one sooner).
FIRST_LOOK_SECONDS = 15
LOOK_EVERY_SECONDS = 60
RUN_EVERY_SECONDS = 3600
RETRY_FAILED_AFTER_SECONDS = 300
# The longest pause between two batches.
MOST_PAUSE_SECONDS = 1.0


@dataclass(frozen=True)
class Pace:
    """How fast a run removes: messages per write transaction (each holds SQLite's write lock,
    which deliveries wait for), and after each a pause this many times as long as it took."""

    batch: int
    pause_per_batch: float


# The service's own runs: deliveries wait for at most one short batch and get the database
# most of the time. bench/retention.py, 1,000,000 messages, 4 senders posting: 30 and pauses
# three times as long left the senders' p99 1.71x what it was without retention on SQLite
# (743 removed/s) and 1.87x on PostgreSQL (1,291/s); with pauses of 2x, 2.07x (50), 1.98x (30)
# and 2.18x. A batch's cost is mostly its commit, so smaller ones mainly remove less.
SERVICE_PACE = Pace(batch=30, pause_per_batch=3.0)
# A run an operator starts (the retention and purge commands): as fast as the database goes.
# Larger transactions cost less per message (SQLite, in process: 1,000 a batch removed 9,800
# a second, 10,000 29,500); deliveries wait for up to one batch (1,000,000 messages with 4
# senders posting: 27,880 removed/s on SQLite, the senders' p99 510 ms; 51,187/s on PostgreSQL).
COMMAND_BATCH = 10_000

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RetentionResult:
    """What a run archived and removed (messages, and deliveries owed for them that ended with
    them), and how it ended: completed, or stopped (its process was stopping)."""

    cutoff: str
    removed: int
    deliveries_ended: int
    outcome: str
    archived: int = 0


@dataclass(frozen=True)
class RunState:
    """How retention last ran on this database, as every host sees it."""

    last_started_at: float | None
    last_completed_at: float | None
    last_outcome: str | None
    last_removed: int | None


def cutoff(days: int, now: float) -> str:
    """The created_at before which messages are removed: `days` whole days before `now`."""
    return iso_from_epoch(now - days * DAY_SECONDS)


def count_stored_before(conn: Connection, before: str) -> int:
    """How many messages were stored (created_at) before `before`."""
    return conn.execute(select(func.count()).select_from(messages).where(messages.c.created_at < before)).scalar_one()


def oldest_stored_at(conn: Connection) -> str | None:
    """When the oldest stored message was stored (None when none is)."""
    return conn.execute(select(func.min(messages.c.created_at))).scalar_one()


def oldest_stored_before(conn: Connection, before: str, limit: int) -> list[dict]:
    """Up to `limit` of the messages stored before `before`, oldest first, as archives hold
    them (position, message_id, from, to, ts, text, created_at: strings as /messages gives)."""
    dialect = dialect_of(conn)
    rows = conn.execute(
        select(messages.c.id, *PAGE_COLUMNS)
        .where(messages.c.created_at < before)
        .order_by(messages.c.created_at)
        .limit(limit)
    )
    return [{"position": row.id, **message_document(stored_message(dialect, row))} for row in rows]


def positions_stored_before(conn: Connection, before: str, limit: int) -> list[int]:
    """The positions of up to `limit` of the messages stored before `before`, oldest first."""
    oldest = select(messages.c.id).where(messages.c.created_at < before).order_by(messages.c.created_at).limit(limit)
    return list(conn.execute(oldest).scalars())


def remove_positions(conn: Connection, positions: list[int]) -> tuple[int, int]:
    """Remove the messages at `positions`, keeping the counts exact, and the deliveries owed
    for them; returns (messages, deliveries) removed. Run in a write transaction; raises
    SQLAlchemyError."""
    one_of = dialect_of(conn).one_of
    removed = delete_counted(conn, one_of(messages.c.id, positions))
    if not removed:
        return 0, 0
    ended = conn.execute(
        delete(forward_deliveries)
        .where(one_of(forward_deliveries.c.position, positions))
        .returning(forward_deliveries.c.position)
    ).all()
    return removed, len(ended)


def run_state(conn: Connection) -> RunState | None:
    """How retention last ran (None before its first run on this database)."""
    row = conn.execute(select(maintenance_runs).where(maintenance_runs.c.task == RETENTION)).one_or_none()
    if row is None:
        return None
    return RunState(row.last_started_at, row.last_completed_at, row.last_outcome, row.last_removed)


def _take_lease(conn: Connection, owner: str, now: float) -> bool:
    conn.execute(
        dialect_of(conn)
        .insert(maintenance_runs)
        .values(task=RETENTION)
        .on_conflict_do_nothing(index_elements=[maintenance_runs.c.task])
    )
    taken = conn.execute(
        update(maintenance_runs)
        .where(
            maintenance_runs.c.task == RETENTION,
            or_(
                maintenance_runs.c.owner.is_(None),
                maintenance_runs.c.lease_until < now,
                maintenance_runs.c.owner == owner,
            ),
        )
        .values(owner=owner, lease_until=now + LEASE_SECONDS, last_started_at=now)
        .returning(maintenance_runs.c.task)
    ).all()
    return bool(taken)


def _renew_lease(conn: Connection, owner: str, now: float) -> None:
    conn.execute(
        update(maintenance_runs)
        .where(maintenance_runs.c.task == RETENTION, maintenance_runs.c.owner == owner)
        .values(lease_until=now + LEASE_SECONDS)
    )


def _end_run(conn: Connection, owner: str, now: float, outcome: str, removed: int) -> None:
    values = {"owner": None, "lease_until": None, "last_outcome": outcome, "last_removed": removed}
    if outcome == COMPLETED:
        values["last_completed_at"] = now
    conn.execute(
        update(maintenance_runs)
        .where(maintenance_runs.c.task == RETENTION, maintenance_runs.c.owner == owner)
        .values(**values)
    )


def new_owner() -> str:
    """A name for this process's runs: its host, its pid, and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def run_retention(
    database: Database,
    days: int,
    owner: str,
    progress: Callable[[int], None] | None = None,
    pause: Callable[[float], bool] | None = None,
    archive: ArchiveStore | None = None,
    pace: Pace = SERVICE_PACE,
) -> RetentionResult | None:
    """One run now: remove every message stored more than `days` days ago, a chunk at a time
    (with `archive`, written there and checked first), in batches at `pace`. None when another
    process is running one. `pause(seconds)` waits between batches and says whether to go on (False:
    the process is stopping; the run ends as stopped, and the next is due sooner). Raises
    what the database raised, or ArchiveFailed (then nothing of that chunk was removed); the
    run is recorded as failed and its lease let go."""
    now = time.time()
    before = cutoff(days, now)
    with database.write_transaction() as conn:
        if not _take_lease(conn, owner, now):
            return None
    removed = ended = archived = 0
    outcome = COMPLETED
    try:
        while outcome == COMPLETED:
            with database.read_transaction() as conn:
                if archive is None:
                    positions = positions_stored_before(conn, before, CHUNK)
                else:
                    chunk = oldest_stored_before(conn, before, CHUNK)
                    positions = [row["position"] for row in chunk]
            if not positions:
                break
            if archive is not None:
                from webhook_service.archive.parquet import archive_messages  # pyarrow, where archives are written

                archived += archive_messages(archive, chunk)
            for start in range(0, len(positions), pace.batch):
                started = time.monotonic()
                with database.write_transaction(large=True) as conn:
                    batch, owed = remove_positions(conn, positions[start : start + pace.batch])
                    _renew_lease(conn, owner, time.time())
                removed, ended = removed + batch, ended + owed
                if progress is not None:
                    progress(batch)
                took = time.monotonic() - started
                if not (pause or _sleep)(min(MOST_PAUSE_SECONDS, pace.pause_per_batch * took)):
                    outcome = STOPPED
                    break
            if len(positions) < CHUNK:
                break
    except (*DATABASE_ERRORS, ArchiveFailed) as error:
        reason = _reason(error)
        try:
            with database.write_transaction() as conn:
                _end_run(conn, owner, time.time(), f"failed: {reason}", removed)
        except DATABASE_ERRORS:
            pass  # the lease runs out by itself
        raise
    with database.write_transaction() as conn:
        _end_run(conn, owner, time.time(), outcome, removed)
    return RetentionResult(before, removed, ended, outcome.split(":", 1)[0], archived)


def _reason(error: BaseException) -> str:
    """Why a run failed, in one line: the archive's message, or the database driver's reason."""
    return str(error) if isinstance(error, ArchiveFailed) else describe_database_error(error)


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return True


class RetentionRunner:
    """Runs retention from a thread of this process when it is due and no other process runs
    it, until closed; tells `observe(state, oldest_stored_at)` what it sees at every look and
    `ran(result or None, failed)` after every run it made."""

    def __init__(
        self,
        database: Database,
        days: int,
        observe: Callable[[RunState | None, str | None], None] | None = None,
        ran: Callable[[RetentionResult | None], None] | None = None,
        first_look: float = FIRST_LOOK_SECONDS,
        look_every: float = LOOK_EVERY_SECONDS,
        archive: ArchiveStore | None = None,
    ) -> None:
        self.database, self.days, self.archive = database, days, archive
        self._observe, self._ran = observe, ran
        self._first_look, self._look_every = first_look, look_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner = ""

    def start(self) -> None:
        """Start looking from a thread of this process (a gunicorn worker calls it once forked)."""
        self._owner = new_owner()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the batch under way, if any."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        wait = self._first_look
        while not self._stop.wait(wait):
            wait = self._look_every
            try:
                self._look()
            except (*DATABASE_ERRORS, ArchiveFailed) as error:
                logger.warning("retention_failed", error=_reason(error))
                if self._ran is not None:
                    self._ran(None)

    def _look(self) -> None:
        state = self._observed()
        if not self._due(state, time.time()):
            return
        result = run_retention(self.database, self.days, self._owner, pause=self._pause, archive=self.archive)
        if result is None:
            return
        self._observed()  # what the run left: the oldest message is no longer one it removed
        logger.info(
            "retention_run",
            outcome=result.outcome,
            archived=result.archived,
            removed=result.removed,
            deliveries_ended=result.deliveries_ended,
            before=result.cutoff,
        )
        if self._ran is not None:
            self._ran(result)

    def _observed(self) -> RunState | None:
        with self.database.read_transaction() as conn:
            state, oldest = run_state(conn), oldest_stored_at(conn)
        if self._observe is not None:
            self._observe(state, oldest)
        return state

    def _pause(self, seconds: float) -> bool:
        return not self._stop.wait(seconds)

    @staticmethod
    def _due(state: RunState | None, now: float) -> bool:
        if state is None or state.last_started_at is None:
            return True
        if state.last_outcome is not None and state.last_outcome != COMPLETED:
            return now - state.last_started_at >= RETRY_FAILED_AFTER_SECONDS
        return now - state.last_started_at >= RUN_EVERY_SECONDS
