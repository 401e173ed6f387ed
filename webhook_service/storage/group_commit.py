"""Group commit: writes that arrive together in one process share one transaction.

A durable commit costs an fsync, and on SQLite only one process writes at a time, so one
transaction per request caps ingestion at the disk's fsync rate. Here the first caller
becomes the leader and commits every write queued so far in one transaction; callers that
arrive meanwhile wait, and the first of them leads the next batch. Every caller returns
only after its own write is committed (or has failed), so an acknowledgement still means
the row is on disk.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

Item = TypeVar("Item")
Result = TypeVar("Result")

DEFAULT_MAX_BATCH = 64
_UNSET = object()


class _Pending(Generic[Item, Result]):
    __slots__ = ("error", "item", "leads", "result", "wake")

    def __init__(self, item: Item) -> None:
        self.item = item
        # A lock held from the start: the caller waits by acquiring it, and is woken by the
        # one release of the leader that commits its write (or hands it the lead). Cheaper
        # than an Event, whose Condition runs in Python on both sides.
        self.wake = threading.Lock()
        self.wake.acquire()
        self.leads = False
        self.result: Result | object = _UNSET
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Result]):
    """Runs `write(conn, items)` for concurrent callers in shared write transactions.

    `write` takes the batch in arrival order and returns one result per item.
    """

    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[Connection]],
        write: Callable[[Connection, list[Item]], list[Result]],
        max_batch: int = DEFAULT_MAX_BATCH,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self._transaction = transaction
        self._write = write
        self._max_batch = max_batch
        # Told (items, seconds) after each committed transaction: what metrics observe.
        self._on_commit = on_commit
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._queue: list[_Pending[Item, Result]] = []
        self._leader_active = False

    def submit(self, item: Item) -> Result:
        """Write `item` and return what `write` returned, once its transaction is committed.

        Raises what failed its transaction (a SQLAlchemyError when the database fails);
        nothing of that transaction was committed.
        """
        if self._pid != os.getpid():
            self._reset()
        pending: _Pending[Item, Result] = _Pending(item)
        with self._lock:
            self._queue.append(pending)
            leads = not self._leader_active
            self._leader_active = True
        if not leads:
            pending.wake.acquire()
        if leads or pending.leads:
            self._lead(pending)
        if pending.error is not None:
            raise pending.error
        if pending.result is _UNSET:
            raise RuntimeError("the write was neither committed nor failed")
        return pending.result

    def _lead(self, own: _Pending[Item, Result]) -> None:
        batch: list[_Pending[Item, Result]] = []
        try:
            self._commit(batch, take_queued=True)
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is not None:
                    successor.leads = True
                else:
                    self._leader_active = False
            for pending in batch:
                if pending is not own:  # the leader is awake; every other caller waits
                    pending.wake.release()
            if successor is not None:
                successor.wake.release()

    def _take_batch(self) -> list[_Pending[Item, Result]]:
        batch = self._queue[: self._max_batch]
        del self._queue[: len(batch)]
        return batch

    def _commit(self, batch: list[_Pending[Item, Result]], take_queued: bool = False) -> None:
        # With `take_queued`, the batch is taken only once the transaction has begun, that is
        # once this process has its turn to write: callers that arrive while it waits join
        # this commit. `batch` is filled in place so that the leader wakes exactly these
        # callers, even when this raises.
        started = time.perf_counter()
        try:
            with self._transaction() as conn:
                if take_queued:
                    with self._lock:
                        batch.extend(self._take_batch())
                results = self._write(conn, [pending.item for pending in batch])
        except BaseException as error:  # noqa: BLE001 - every waiting caller must learn the outcome
            if take_queued and not batch:
                # Failed before taking a batch: everything queued shares that failure.
                with self._lock:
                    batch.extend(self._take_batch())
            self._handle_failure(batch, error)
            return
        if self._on_commit is not None:
            self._on_commit(len(batch), time.perf_counter() - started)
        for pending, result in zip(batch, results, strict=True):
            pending.result = result

    def _handle_failure(self, batch: list[_Pending[Item, Result]], error: BaseException) -> None:
        if isinstance(error, Exception) and not isinstance(error, OperationalError) and len(batch) > 1:
            # One item may be at fault: give each its own transaction and its own outcome.
            for pending in batch:
                self._commit([pending])
            return
        # The database itself is unavailable (locked, full, unreadable): all fail alike.
        for pending in batch:
            pending.error = error
        if not isinstance(error, Exception):
            raise error
