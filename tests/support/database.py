"""Reading and writing the database straight, outside the service's code, on either backend."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import func, select, text

from webhook_service.storage.engine import create_database_engine


def run_sql(url: str, statement: str, parameters: dict | None = None) -> list[tuple]:
    """Run one statement in its own transaction and return its rows."""
    engine = create_database_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), parameters or {})
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def stored_ids(url_or_path: str | Path) -> list[str]:
    """The message_ids stored, in feed order. A SQLite file is only read (never made or
    migrated), so this is safe on a database the test has damaged or removed."""
    if isinstance(url_or_path, Path) or url_or_path.startswith("sqlite:///"):
        path = Path(str(url_or_path).removeprefix("sqlite:///"))
        # Closed at once: a connection left open would hold the file (and, in WAL mode, its
        # journal files under this name) for the rest of the test process.
        with closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)) as conn:
            return [row[0] for row in conn.execute("SELECT message_id FROM messages ORDER BY id")]
    return [row[0] for row in run_sql(url_or_path, "SELECT message_id FROM messages ORDER BY id")]


def sqlite_path(url: str) -> Path:
    """The file of a sqlite:/// URL."""
    return Path(url.removeprefix("sqlite:///"))


def fold_counts(url: str) -> None:
    """Fold every count change written so far into the count tables (a no-op where counts
    are kept in place), as the service's folder does every second."""
    from webhook_service.storage.read_model import fold
    from webhook_service.storage.tables import count_changes

    engine = create_database_engine(url)
    try:
        while True:
            with engine.begin() as conn:
                fold(conn)
                if not conn.execute(select(func.count()).select_from(count_changes)).scalar_one():
                    return
    finally:
        engine.dispose()


def store_at(database, monkeypatch, stored_at: float, messages: list) -> None:
    """Store messages through the service's write path as if they arrived at `stored_at`
    (epoch seconds): their created_at, the timeline and retention go by it."""
    from webhook_service.storage import messages as message_storage
    from webhook_service.timestamps import iso_from_epoch

    with monkeypatch.context() as patch:
        patch.setattr(message_storage, "utc_now_iso", lambda: iso_from_epoch(stored_at))
        with database.write_transaction() as conn:
            message_storage.insert_messages_if_new(conn, messages)
