"""Database access for the read endpoints, turning database failures into JSON 503s."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from webhook_service.context import current_database
from webhook_service.errors import ServiceUnavailable

logger = structlog.get_logger(__name__)


@contextmanager
def read_transaction() -> Iterator[Connection]:
    """A connection in one transaction (one snapshot); raises ServiceUnavailable on failure."""
    try:
        with current_database().read_transaction() as conn:
            yield conn
    except (SQLAlchemyError, OSError) as exc:
        logger.error("database read failed", error=describe_database_error(exc))
        raise ServiceUnavailable("database unavailable; retry later") from None


def describe_database_error(exc: SQLAlchemyError | OSError) -> str:
    """The driver's reason, without the statement or its parameters."""
    cause = getattr(exc, "orig", None) or exc
    return f"{type(cause).__name__}: {cause}" if cause is not exc else type(exc).__name__
