"""The read budget: a deadline for the statements of the current request, which each
dialect enforces its own way (SQLite's progress handler, PostgreSQL's statement_timeout)."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# The monotonic time by which the statements of the current request must finish, if any.
_query_deadline: ContextVar[float | None] = ContextVar("webhook_service_query_deadline", default=None)


@contextmanager
def statement_deadline(seconds: float) -> Iterator[None]:
    """Every statement run in this block (this thread or task) must end within `seconds`."""
    token = _query_deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _query_deadline.reset(token)


def remaining_budget_ms() -> int | None:
    """Milliseconds left of the current deadline (at least 1), or None without one."""
    deadline = _query_deadline.get()
    if deadline is None:
        return None
    return max(1, int((deadline - time.monotonic()) * 1000))


def past_deadline() -> bool:
    """True once the current deadline, if any, has passed."""
    deadline = _query_deadline.get()
    return deadline is not None and time.monotonic() > deadline


def current_deadline() -> float | None:
    """The monotonic deadline of the current block, if any."""
    return _query_deadline.get()


class Watchdog:
    """One thread per process that calls each watched read's `interrupt` at its deadline,
    unless the read ended first: a statement is stopped at the deadline itself, also inside a
    long step that a check between steps would only see late, and without the GIL its own
    thread would need. Released reads are never interrupted: release and interrupt hold one lock."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._starting = threading.Lock()

    def _ready(self) -> None:
        # Made in the process that uses it: a gunicorn worker forked from a master that held
        # one gets its own lock and thread (the first reads of a worker may come at once).
        if self._pid == os.getpid():
            return
        with self._starting:
            if self._pid == os.getpid():
                return
            self._lock = threading.Lock()
            self._wake = threading.Condition(self._lock)
            self._deadlines: list[tuple[float, int]] = []
            self._watched: dict[int, Callable[[], None]] = {}
            self._tickets = itertools.count()
            threading.Thread(target=self._run, name="read-budget", daemon=True).start()
            self._pid = os.getpid()

    def watch(self, deadline: float, interrupt: Callable[[], None]) -> int:
        """Call `interrupt()` at `deadline` unless released before; returns the ticket to release."""
        self._ready()
        with self._lock:
            ticket = next(self._tickets)
            self._watched[ticket] = interrupt
            heapq.heappush(self._deadlines, (deadline, ticket))
            if self._deadlines[0][1] == ticket:
                self._wake.notify()
            return ticket

    def release(self, ticket: int) -> None:
        with self._lock:
            self._watched.pop(ticket, None)

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._deadlines and self._deadlines[0][1] not in self._watched:
                    heapq.heappop(self._deadlines)
                if not self._deadlines:
                    self._wake.wait()
                    continue
                deadline, ticket = self._deadlines[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._deadlines)
                interrupt = self._watched.pop(ticket)
                with contextlib.suppress(Exception):  # a connection closed meanwhile has nothing to stop
                    interrupt()


WATCHDOG = Watchdog()
