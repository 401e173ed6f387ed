"""What differs between the databases the service runs on, behind one interface.

A `Dialect` is chosen once, from the URL, when an engine is made (`dialect_for_url`), and
travels with that engine: shared query code asks `dialect_of(conn)` for it and calls its
methods. Nothing outside this package tests which database it is talking to.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from webhook_service.storage.dialects.base import (
    ENGINE_DIALECT_ATTRIBUTE,
    BackupFailed,
    BackupUnsupported,
    Dialect,
    InsertedRows,
)
from webhook_service.storage.dialects.postgresql import PostgresDialect
from webhook_service.storage.dialects.sqlite import SQLiteDialect

__all__ = ["BackupFailed", "BackupUnsupported", "Dialect", "InsertedRows", "dialect_for_url", "dialect_of"]

_DIALECTS: dict[str, type[Dialect]] = {"sqlite": SQLiteDialect, "postgresql": PostgresDialect}


def dialect_for_url(url: str) -> Dialect:
    """The dialect of a database URL (as Settings validated it); raises ValueError for others."""
    parsed = make_url(url)
    dialect_class = _DIALECTS.get(parsed.get_backend_name())
    if dialect_class is None:
        raise ValueError(f"unsupported database {parsed.get_backend_name()!r}")
    return dialect_class(parsed)


def dialect_of(conn: Connection) -> Dialect:
    """The dialect the engine behind `conn` was made with."""
    return getattr(conn.engine, ENGINE_DIALECT_ATTRIBUTE)
