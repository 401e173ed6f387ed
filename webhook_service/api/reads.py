"""Database access for the read endpoints: a time budget for every read, and database
failures turned into JSON 503s."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy import Connection

from webhook_service.api.context import current_database, current_settings
from webhook_service.api.errors import RequestValidationError, database_failures
from webhook_service.storage.engine import QueryBudgetExceeded

logger = structlog.get_logger(__name__)


@contextmanager
def read_transaction() -> Iterator[Connection]:
    """A connection in one transaction (one snapshot), its statements stopped past the read
    budget (QUERY_BUDGET_MS). Raises RequestValidationError for a read that needed more, and
    ServiceUnavailable when the database fails."""
    budget_ms = current_settings().query_budget_ms
    try:
        with database_failures("read"), current_database().read_transaction(budget_ms / 1000.0) as conn:
            yield conn
    except QueryBudgetExceeded as stopped:
        logger.warning(
            "read stopped at its time budget", budget_ms=budget_ms, stopped_after_ms=round(stopped.seconds * 1000)
        )
        raise RequestValidationError(
            [
                {
                    "loc": ["query"],
                    "msg": f"The query needed more than its {budget_ms} ms budget: narrow it with from, since "
                    "or a longer q",
                    "type": "query_too_expensive",
                }
            ]
        ) from None
