"""Bringing the database to the newest migration: `python -m webhook_service.migrate`
(`make migrate`), and the server at start, once, in the gunicorn master."""

from __future__ import annotations

import sys

from sqlalchemy.exc import SQLAlchemyError

from webhook_service.config import ConfigError, Settings
from webhook_service.storage.engine import describe_database_error
from webhook_service.storage.migrations import SchemaMismatch, upgrade_to_head


class MigrationFailed(RuntimeError):
    """The database could not be reached or migrated; the message says why, in one line."""


def migrate(database_url: str) -> str:
    """Upgrade to the newest revision and return it; raises MigrationFailed."""
    try:
        return upgrade_to_head(database_url)
    except SchemaMismatch as error:
        raise MigrationFailed(f"database migration refused: {error}") from None
    except (SQLAlchemyError, OSError) as error:
        # A file system error names its path (where the SQLite file could not be made).
        reason = f"{type(error).__name__}: {error}" if isinstance(error, OSError) else describe_database_error(error)
        raise MigrationFailed(f"database migration failed: {reason}") from None


def main() -> int:
    try:
        revision = migrate(Settings.from_env().database_url)
    except ConfigError as error:
        print(f"invalid configuration: {error}", file=sys.stderr)
        return 1
    except MigrationFailed as error:
        print(error, file=sys.stderr)
        return 1
    print(f"database at schema revision {revision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
