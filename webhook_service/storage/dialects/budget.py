"""The read budget: a deadline for the statements of the current request, which each
dialect enforces its own way (SQLite's progress handler, PostgreSQL's statement_timeout)."""

from __future__ import annotations

import time
from collections.abc import Iterator
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
