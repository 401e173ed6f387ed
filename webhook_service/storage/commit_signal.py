"""Telling held feed readers that messages were stored, without a database connection.

Every committed batch of deliveries changes one value in memory that all workers of the
server share (`COMMITS`, mapped in the gunicorn master before it forks). A reader holding a
long-poll reads the counter before its query (before its snapshot) and waits until it
moves: a commit its query could not see moves it afterwards, so no wake-up is lost. In the process that committed,
waiting readers are woken at once; in the others a watcher thread looks at the counter
every `WATCH_INTERVAL_SECONDS` while anyone waits. Where several hosts share the database
(PostgreSQL), the watcher also reads the feed's end from the database every
`REMOTE_INTERVAL_SECONDS`: commits of other hosts reach nobody's memory here.
"""

from __future__ import annotations

import struct
import threading
import time
import weakref
from collections.abc import Callable

import structlog

from webhook_service.storage.shared_memory import shared_block

WATCH_INTERVAL_SECONDS = 0.05
REMOTE_INTERVAL_SECONDS = 0.5
_COUNTER = struct.Struct("<Q")

logger = structlog.get_logger(__name__)


class CommitSignal:
    """A value every worker of the server sees, changed after each committed batch.

    The value is the monotonic clock in nanoseconds at the latest commit's bump, written
    whole (one aligned 8-byte store) without a lock: whatever two workers write at once,
    it differs from what any reader saw before either wrote.
    """

    def __init__(self) -> None:
        self._memory = shared_block(_COUNTER.size)
        self._listeners: weakref.WeakSet[FeedWaiters] = weakref.WeakSet()

    def value(self) -> int:
        """The value now."""
        return _COUNTER.unpack_from(self._memory, 0)[0]

    def bump(self) -> None:
        """Say that messages were committed just now: wakes this process's readers at once."""
        _COUNTER.pack_into(self._memory, 0, max(time.monotonic_ns(), self.value() + 1))
        for waiters in list(self._listeners):
            if waiters.waiting:
                waiters.notify()

    def listen(self, waiters: FeedWaiters) -> None:
        self._listeners.add(waiters)


# Made at import, in the gunicorn master, so that the workers it forks share it.
COMMITS = CommitSignal()


class TooManyWaiting(Exception):
    """This process holds as many long-polls as it may: the reader should come back later."""


class FeedWaiters:
    """The long-polls one process holds: at most `max_waiters` at once.

    `newest_position` (where several hosts write) reads from the database the position of the
    newest message a reader may read, which grows only when a message enters the feed; it is
    called by the watcher thread, never by a waiting request. `on_waiting` is told
    how many are held whenever that changes (a gauge).
    """

    def __init__(
        self,
        max_waiters: int,
        signal: CommitSignal = COMMITS,
        newest_position: Callable[[], int] | None = None,
        on_waiting: Callable[[int], None] | None = None,
    ) -> None:
        self.max_waiters = max_waiters
        self._on_waiting = on_waiting
        self._signal = signal
        self._newest_position = newest_position
        self._condition = threading.Condition()
        self._waiting = 0
        self._stopping = False
        self._remote_latest: int | None = None
        self._watcher: threading.Thread | None = None
        signal.listen(self)
        _ALL_WAITERS.add(self)

    @property
    def waiting(self) -> int:
        """How many requests are held now."""
        return self._waiting

    def counter(self) -> int:
        """Read before the query whose answer a wait follows (see wait)."""
        return self._signal.value()

    def wait(self, counter: int, latest_position: int, deadline: float) -> bool:
        """Hold the caller until messages may have been stored since it read `counter` (before
        its query) and `latest_position` (the feed's end, by its query), or until `deadline`
        (monotonic), or until the process stops. True: ask the database again.

        False at once when the process is stopping; TooManyWaiting when `max_waiters` are
        held already (an early empty answer would have the reader ask again at once).
        """
        with self._condition:
            if self._stopping:
                return False
            if self._waiting >= self.max_waiters:
                raise TooManyWaiting
            self._waiting += 1
            self._tell_waiting()
            self._start_watcher()
            self._condition.notify_all()  # the watcher starts looking
            try:
                while not self._stopping:
                    if self._moved(counter, latest_position):
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._condition.wait(remaining)
                return False
            finally:
                self._waiting -= 1
                self._tell_waiting()

    def _tell_waiting(self) -> None:
        if self._on_waiting is not None:
            self._on_waiting(self._waiting)

    def _moved(self, counter: int, latest_position: int) -> bool:
        if self._signal.value() != counter:
            return True
        return self._remote_latest is not None and self._remote_latest > latest_position

    def notify(self) -> None:
        """Wake every held request to look again."""
        with self._condition:
            self._condition.notify_all()

    def stop(self) -> None:
        """Answer every held request now, and refuse new waits: the process is stopping."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """stop(), and wait for the watcher thread to end (before the database is disposed)."""
        self.stop()
        if self._watcher is not None:
            self._watcher.join(timeout)

    def _start_watcher(self) -> None:
        # Started by the first wait of the process (threads do not survive a fork).
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch, name="feed-watcher", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        last_counter = None
        next_remote_check = 0.0
        while True:
            with self._condition:
                while self._waiting == 0 and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return
            counter = self._signal.value()
            moved = counter != last_counter
            last_counter = counter
            if self._newest_position is not None and time.monotonic() >= next_remote_check:
                next_remote_check = time.monotonic() + REMOTE_INTERVAL_SECONDS
                moved |= self._check_remote()
            if moved:
                self.notify()
            time.sleep(WATCH_INTERVAL_SECONDS)

    def _check_remote(self) -> bool:
        try:
            latest = self._newest_position()
        except Exception as error:  # noqa: BLE001 - a failed look is tried again next interval
            logger.debug("feed watcher could not read the feed's end", error=type(error).__name__)
            return False
        moved = self._remote_latest is None or latest > self._remote_latest
        self._remote_latest = latest
        return moved


_ALL_WAITERS: weakref.WeakSet[FeedWaiters] = weakref.WeakSet()


def stop_all_waiters() -> None:
    """Answer every held long-poll of this process now (the worker is stopping)."""
    for waiters in list(_ALL_WAITERS):
        waiters.stop()
