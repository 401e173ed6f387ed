"""The read model: everything derived from the stored messages for reads, and how it changes.

Each kept count is one module here (senders and totals, the timeline, the gram counts, the
day counts), and so is the search plan that reads them (search.plan_search); storage/messages.py tells them what it stored or deleted through
record_inserted and record_deleted, the one call on each side of a write. Where writers
run in parallel (PostgreSQL) a write only appends its changes, and fold moves them into the
count tables, one process at a time; CountFolder does it every second in each process that
writes. Writes go only down: messages -> read model -> dialect.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import structlog
from sqlalchemy import Connection

from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.engine import describe_database_error
from webhook_service.storage.read_model import senders
from webhook_service.storage.read_model.day_counts import DAYS
from webhook_service.storage.read_model.grams import FOUR_GRAMS, GRAMS
from webhook_service.storage.read_model.kept_counts import KeptCounts
from webhook_service.storage.read_model.senders import SENDERS
from webhook_service.storage.read_model.timeline import TIMELINE

# Every kept count but the sender counts, which senders.py keeps with the totals.
KEPT: tuple[KeptCounts, ...] = (TIMELINE, GRAMS, FOUR_GRAMS, DAYS)
_KEPT_BY_NAME = {kept.name: kept for kept in KEPT}
# How often a writing process folds the changes in: reads add what is not folded yet, so
# this bounds how many changes a read adds up (about a second of writes).
FOLD_INTERVAL_SECONDS = 1.0
# Change rows (one per write transaction) folded per transaction: measured on PostgreSQL under
# full ingestion, a fold of one second's changes held its transaction 0.5 to 1 s, and the feed
# (which waits for the oldest running transaction) waited with it.
FOLD_CHUNK_ROWS = 20

logger = structlog.get_logger(__name__)


def record_inserted(conn: Connection, rows: list[dict]) -> None:
    """Count messages just stored (rows of the messages table), in the caller's write
    transaction."""
    _record(conn, rows, 1)


def record_deleted(conn: Connection, rows: list[dict]) -> None:
    """Uncount messages just deleted (rows with from_msisdn, created_at, text_folded and
    ts_instant), in the caller's write transaction."""
    _record(conn, rows, -1)


def _record(conn: Connection, rows: list[dict], sign: int) -> None:
    if not rows:
        return
    dialect = dialect_of(conn)
    by_sender = SENDERS.counted(rows)
    counted = [(kept, kept.counted(rows)) for kept in KEPT if kept.kept_on(dialect)]
    if dialect.deferred is not None:
        changes = senders.changes(by_sender, sign)
        for kept, counts in counted:
            changes.update(kept.changes(counts, sign))
        dialect.deferred.record(conn, changes)
    elif sign > 0:
        senders.add_in_place(conn, by_sender)
        for kept, counts in counted:
            kept.add(conn, counts)
    else:
        senders.remove_in_place(conn, by_sender)
        for kept, counts in counted:
            kept.remove(conn, counts)


def fold(conn: Connection, limit: int = FOLD_CHUNK_ROWS) -> int:
    """Move up to `limit` of the changes written so far into the count tables, in the caller's
    transaction, unless another process is folding; returns how many change rows it took
    (fewer than `limit`: it took every one it saw). Nothing to do where counts are kept in place.

    A fold's transaction holds back the feed's horizon (PostgreSQL's oldest running
    transaction) while it runs: a chunk at a time keeps that short (fold_all goes on)."""
    dialect = dialect_of(conn)
    if dialect.deferred is None or not dialect.deferred.take_turn(conn):
        return 0
    taken, changes = dialect.deferred.take_changes(conn, limit)
    by_counter: dict[str, dict[str, int]] = defaultdict(dict)
    for counter, key, n in changes:
        by_counter[counter][key] = n
    senders.fold(conn, by_counter)
    for counter, changes in by_counter.items():
        kept = _KEPT_BY_NAME.get(counter.split(":", 1)[0])
        if kept is not None:
            kept.fold(conn, counter, changes)
    return taken


def fold_all(engine, stopping: threading.Event | None = None) -> None:
    """Fold every change written so far, a chunk per transaction. Stops early when another
    process folds (it takes the rest), or once `stopping` is set."""
    while stopping is None or not stopping.is_set():
        with engine.begin() as conn:
            taken = fold(conn)
        if taken < FOLD_CHUNK_ROWS:
            return


class CountFolder:
    """Folds the changes in every FOLD_INTERVAL_SECONDS from a thread of this process, once
    started (a writing process starts it at its first write), until closed. A failed fold is
    logged and tried again: reads stay exact, only longer to add up, until one succeeds."""

    def __init__(self, engine_of, interval: float = FOLD_INTERVAL_SECONDS, after_fold=None) -> None:
        # `after_fold(conn)`: told after each fold, in a transaction of its own that writes
        # nothing (what metrics observe, without holding back the feed's horizon).
        self._engine_of, self._interval, self._after_fold = engine_of, interval, after_fold
        self._started_in: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def start(self, pid: int) -> None:
        """Start folding in process `pid`, unless it does already (threads do not survive a fork)."""
        if self._started_in == pid:
            return
        with self._lock:
            if self._started_in != pid and not self._stop.is_set():
                self._started_in = pid
                self._thread = threading.Thread(target=self._run, name="count-folder", daemon=True)
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop folding, and wait for a fold under way to end (before the database is disposed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._interval):
            try:
                engine = self._engine_of()
                fold_all(engine, self._stop)
                if self._after_fold is not None:
                    with engine.begin() as conn:
                        self._after_fold(conn)
            except Exception as error:  # noqa: BLE001 - the database may be down for a while
                if not failing:
                    logger.warning("count_fold_failed", error=describe_database_error(error))
                failing = True
                continue
            failing = False
