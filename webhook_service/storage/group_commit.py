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
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError, SQLAlchemyError

Item = TypeVar("Item")
Result = TypeVar("Result")

DEFAULT_MAX_BATCH = 64


class _Pending(Generic[Item, Result]):
    __slots__ = ("error", "item", "leads", "result", "wake")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.wake = threading.Event()
        self.leads = False
        self.result: Result | None = None
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
    ) -> None:
        self._transaction = transaction
        self._write = write
        self._max_batch = max_batch
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._queue: list[_Pending[Item, Result]] = []
        self._leader_active = False

    def submit(self, item: Item) -> Result:
        """Write `item` and return what `write` returned, once its transaction is committed.

        Raises the SQLAlchemyError that failed the transaction; nothing of it was committed.
        """
        if self._pid != os.getpid():
            self._reset()
        pending: _Pending[Item, Result] = _Pending(item)
        with self._lock:
            self._queue.append(pending)
            leads = not self._leader_active
            self._leader_active = True
        if not leads:
            pending.wake.wait()
        if leads or pending.leads:
            self._lead()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _lead(self) -> None:
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: len(batch)]
        try:
            self._commit(batch)
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is not None:
                    successor.leads = True
                else:
                    self._leader_active = False
            for pending in batch:
                pending.wake.set()
            if successor is not None:
                successor.wake.set()

    def _commit(self, batch: list[_Pending[Item, Result]]) -> None:
        try:
            results = self._write_all(batch)
        except OperationalError as error:
            # The database itself is unavailable (locked, full, unreadable): all fail alike.
            for pending in batch:
                pending.error = error
            return
        except SQLAlchemyError as error:
            if len(batch) == 1:
                batch[0].error = error
                return
            # One item may be at fault: give each its own transaction and its own outcome.
            for pending in batch:
                self._commit([pending])
            return
        except BaseException as error:
            for pending in batch:
                pending.error = error
            raise
        for pending, result in zip(batch, results, strict=True):
            pending.result = result

    def _write_all(self, batch: list[_Pending[Item, Result]]) -> list[Result]:
        with self._transaction() as conn:
            return self._write(conn, [pending.item for pending in batch])
