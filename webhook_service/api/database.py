"""Database access for the read endpoints, turning database failures into JSON 503s."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from webhook_service.context import current_database
from webhook_service.errors import ServiceUnavailable
from webhook_service.storage.engine import describe_database_error

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
