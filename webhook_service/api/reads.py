"""Database access for the read endpoints: a time budget for every read, and database
failures turned into JSON 503s."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from webhook_service.context import current_database, current_metrics, current_settings
from webhook_service.errors import RequestValidationError, ServiceUnavailable
from webhook_service.storage.engine import QueryBudgetExceeded, describe_database_error, query_budget

logger = structlog.get_logger(__name__)


@contextmanager
def read_transaction() -> Iterator[Connection]:
    """A connection in one transaction (one snapshot), its statements stopped past the read
    budget (QUERY_BUDGET_MS). Raises RequestValidationError for a read that needed more, and
    ServiceUnavailable when the database fails."""
    budget_ms = current_settings().query_budget_ms
    try:
        with query_budget(budget_ms / 1000.0), current_database().read_transaction() as conn:
            yield conn
    except QueryBudgetExceeded:
        logger.warning("read stopped at its time budget", budget_ms=budget_ms)
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
    except (SQLAlchemyError, OSError) as exc:
        current_metrics().count_database_error("read")
        logger.error("database read failed", error=describe_database_error(exc))
        raise ServiceUnavailable("database unavailable; retry later") from None
