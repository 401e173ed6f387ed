"""`python -m webhook_service.migrate`: bring the database named by DATABASE_URL to the newest
migration (`make migrate`). The server does the same at start, in the gunicorn master."""

import sys

from sqlalchemy.exc import SQLAlchemyError

from webhook_service.config import ConfigError, Settings
from webhook_service.storage.migrations import upgrade_to_head


def main() -> int:
    try:
        url = Settings.from_env().database_url
        revision = upgrade_to_head(url)
    except ConfigError as error:
        print(f"invalid configuration: {error}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as error:
        reason = getattr(error, "orig", None) or error
        print(f"database migration failed: {type(reason).__name__}: {reason}", file=sys.stderr)
        return 1
    print(f"database at schema revision {revision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
