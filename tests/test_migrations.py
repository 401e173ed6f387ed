import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from webhook_service.storage.engine import create_database_engine
from webhook_service.storage.migrations import (
    MigrationFailed,
    downgrade_to_base,
    head_revision,
    migrate,
    upgrade_to_head,
)
from webhook_service.storage.tables import is_outside_metadata, metadata


def include_name(name, type_, parent_names):
    return not is_outside_metadata(name, type_)


def test_migrations_build_exactly_the_tables_in_code(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert upgrade_to_head(url) == head_revision()
    engine = create_database_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"include_name": include_name})
            assert compare_metadata(context, metadata) == []
            assert "messages_text_fts" in inspect(conn).get_table_names()
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_downgrade_is_clean(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade_to_head(url)
    upgrade_to_head(url)
    downgrade_to_base(url)
    engine = create_database_engine(url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
            assert conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE type='trigger'").scalar() == 0
    finally:
        engine.dispose()
    assert upgrade_to_head(url) == head_revision()


def test_a_revision_from_a_newer_release_is_refused_naming_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade_to_head(url)
    with sqlite3.connect(tmp_path / "m.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_future'")
    with pytest.raises(MigrationFailed) as refused:
        migrate(url)
    message = str(refused.value)
    assert "0099_future" in message and "Deploy that release again" in message and "\n" not in message


def test_another_applications_database_is_left_alone(tmp_path):
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    with pytest.raises(MigrationFailed, match="invoices"):
        migrate(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["invoices"]


def test_texts_folded_before_0008_tell_a_nul_from_the_symbol_for_nul_after_it(empty_database_url, monkeypatch):
    from webhook_service.storage import messages as message_storage
    from webhook_service.storage import read_model
    from webhook_service.storage.dialects import postgresql
    from webhook_service.storage.dialects.postgresql import PostgresDialect
    from webhook_service.storage.engine import Database
    from webhook_service.storage.messages import MessageFilter, NewMessage, insert_messages_if_new, list_messages
    from webhook_service.storage.read_model.timeline import TIMELINE

    upgrade_to_head(empty_database_url, revision="0007")
    database = Database(empty_database_url)
    try:
        monkeypatch.setattr(message_storage, "FOLDED_NUL", "\u2400")  # how 0003 to 0007 folded a NUL
        # No gram or day counts before 0009, and counts in place before 0013.
        monkeypatch.setattr(read_model, "KEPT", (TIMELINE,))
        monkeypatch.setattr(PostgresDialect, "deferred", None)
        # No transaction_offset before 0020.
        monkeypatch.setattr(postgresql, "_TRANSACTION_ID", select(postgresql._TRANSACTION))
        with database.write_transaction() as conn:
            insert_messages_if_new(
                conn,
                [
                    NewMessage("nul", "+1", "+2", "2025-01-01T00:00:00Z", "A\x00B"),
                    NewMessage("symbol", "+1", "+2", "2025-01-01T00:00:01Z", "A\u2400B"),
                    NewMessage("plain", "+1", "+2", "2025-01-01T00:00:02Z", "AB"),
                ],
            )
        monkeypatch.undo()
        database.dispose()
        upgrade_to_head(empty_database_url)

        def found(needle: str) -> list[str]:
            with database.read_transaction() as conn:
                page = list_messages(conn, MessageFilter(text_contains=needle), 10)
            return [message.message_id for message in page.items]

        assert found("a\x00b") == ["nul"]
        assert found("\x00") == ["nul"]
        assert found("a\u2400b") == ["symbol"]
        assert found("ab") == ["plain"]
    finally:
        database.dispose()
