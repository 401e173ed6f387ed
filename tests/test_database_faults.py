"""A database that disappears, is replaced, or stops taking writes while the app runs."""

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from tests.support.database import stored_ids
from tests.support.messages import make_message
from webhook_service.storage.engine import Database
from webhook_service.storage.migrations import upgrade_to_head

# Files that vanish, are replaced or lose their permissions: SQLite's own faults. PostgreSQL's
# (a server restarted under load) are in tests/e2e/test_postgres.py.
pytestmark = pytest.mark.sqlite_only


def database_file(settings) -> Path:
    return Path(settings.database_url.removeprefix("sqlite:///"))


def sqlite_files(path: Path) -> list[Path]:
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm")]


def test_a_deleted_database_refuses_writes_and_is_not_ready_until_it_is_back(client, signed_post, settings, tmp_path):
    path = database_file(settings)
    assert signed_post(make_message(message_id="before")).status_code == 200
    saved = tmp_path / "saved"
    saved.mkdir()
    for file in sqlite_files(path):
        shutil.move(file, saved / file.name)

    refused = signed_post(make_message(message_id="while-gone"))
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.get_json()["checks"]["database"] == "unavailable"
    assert client.get("/messages").status_code == 503
    assert not path.exists(), "no empty database may be created in its place"

    for file in saved.iterdir():
        shutil.move(file, path.parent / file.name)
    # The deliveries refused meanwhile hold readiness down until one commits again.
    assert client.get("/health/ready").get_json()["checks"]["writes"].startswith("failing")
    assert signed_post(make_message(message_id="after")).status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert stored_ids(path) == ["before", "after"]


def test_a_database_replaced_underneath_gets_the_next_writes(client, signed_post, settings, tmp_path):
    path = database_file(settings)
    assert signed_post(make_message(message_id="old-1")).status_code == 200
    # Restore "a backup" the way an operator might: a new file renamed over the path.
    backup = tmp_path / "backup.db"
    upgrade_to_head(f"sqlite:///{backup}")
    with sqlite3.connect(backup) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for stale in sqlite_files(path)[1:]:
        stale.unlink(missing_ok=True)
    backup.rename(path)

    assert signed_post(make_message(message_id="new-1")).status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert [m["message_id"] for m in client.get("/messages").get_json()["data"]] == ["new-1"]
    assert stored_ids(path) == ["new-1"]


def test_a_file_moved_in_beside_the_journal_of_the_one_before_is_not_opened_until_it_is_removed(
    client, signed_post, settings, tmp_path
):
    path = database_file(settings)
    assert signed_post(make_message(message_id="before-backup")).status_code == 200
    backup = tmp_path / "backup.db"
    source, target = sqlite3.connect(path), sqlite3.connect(backup)
    source.backup(target)
    source.close(), target.close()
    assert signed_post(make_message(message_id="after-backup")).status_code == 200
    assert Path(f"{path}-wal").exists()  # the service's journal of the file now at the path
    backup.rename(path)  # the backup moved over the path, the old -wal and -shm still beside it

    refused = signed_post(make_message(message_id="while-stale"))
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    ready = client.get("/health/ready").get_json()
    assert ready["checks"]["database"] == "unavailable"
    assert client.get("/messages").status_code == 503

    for stale in sqlite_files(path)[1:]:
        stale.unlink()
    assert signed_post(make_message(message_id="after-restore")).status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert stored_ids(path) == ["before-backup", "after-restore"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_file_moved_in_while_a_connection_opens_is_not_read_through_the_journal_before_it(
    settings, tmp_path, monkeypatch
):
    """A restore under load: the database removed, then the backup moved in at the moment a
    connection is being opened, the old file's -wal and -shm still beside it (another
    program holds them). Read through them, the backup showed another file's pages (a
    delivery failed: the totals row was not found)."""
    from webhook_service.storage.dialects import sqlite as sqlite_dialect

    path = database_file(settings)
    database = Database(settings.database_url)
    backup = tmp_path / "backup.db"
    holder = sqlite3.connect(path)
    try:
        with database.write_transaction() as conn:
            conn.exec_driver_sql("PRAGMA user_version=1")  # the service's journal is beside the file
        source, target = sqlite3.connect(path), sqlite3.connect(backup)
        source.backup(target)
        source.close(), target.close()
        holder.execute("SELECT count(*) FROM messages").fetchall()  # keeps the -wal and -shm
        database.dispose()
        path.unlink()  # "remove database"
        real_connect = sqlite3.connect

        def move_backup_in_while_opening(*args, **kwargs):
            if backup.exists():
                backup.rename(path)
            return real_connect(*args, **kwargs)

        monkeypatch.setattr(sqlite_dialect.sqlite3, "connect", move_backup_in_while_opening)
        with (
            pytest.raises(OperationalError, match="replaced or removed while it was being opened"),
            database.read_transaction(),
        ):
            pass
        # Until the -wal and -shm of the file before are removed, no connection opens.
        with (
            pytest.raises(OperationalError, match="of the file before it are still beside it"),
            database.read_transaction(),
        ):
            pass
        database.dispose()
        holder.close()
        holder = None
        for stale in sqlite_files(path)[1:]:
            stale.unlink(missing_ok=True)
        with database.write_transaction() as conn:
            conn.exec_driver_sql("PRAGMA user_version=2")
    finally:
        database.dispose()
        if holder is not None:
            holder.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_the_reason_a_stale_journal_is_refused_names_the_files(settings, tmp_path):
    path = database_file(settings)
    database = Database(settings.database_url)
    # Another program with the file open: closing the service's connections leaves the journal.
    holder = sqlite3.connect(path)
    try:
        holder.execute("SELECT count(*) FROM messages").fetchall()
        with database.write_transaction() as conn:
            conn.exec_driver_sql("PRAGMA user_version=1")
        shutil.copy(path, tmp_path / "copy.db")
        database.dispose()
        (tmp_path / "copy.db").rename(path)
        with pytest.raises(OperationalError) as refused, database.read_transaction():
            pass
    finally:
        database.dispose()
        holder.close()
    assert f"{path.name}-wal and {path.name}-shm of the file before it are still beside it" in str(refused.value)


def test_nothing_is_acknowledged_into_a_file_replaced_during_the_commit(settings, tmp_path):
    """The check after the commit: a write that landed in the old inode is an error."""
    from webhook_service.storage.dialects.sqlite import DatabaseFileChanged

    path = database_file(settings)
    database = Database(settings.database_url)
    try:
        with pytest.raises(DatabaseFileChanged), database.write_transaction() as conn:
            conn.exec_driver_sql("PRAGMA user_version=7")
            shutil.copy(path, tmp_path / "copy.db")
            (tmp_path / "copy.db").rename(path)
    finally:
        database.dispose()


def test_readiness_reports_a_database_that_takes_no_writes(client):
    # Another process holds the write lock, as a stuck migration or a sqlite3 shell would.
    path = client.application.extensions["webhook_service.settings"].database_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        response = client.get("/health/ready")
        assert response.status_code == 503 and response.headers["Retry-After"]
        body = response.get_json()
        assert body["checks"]["writes"].startswith("failing") and "locked" in body["checks"]["writes"]
        assert body["checks"]["database"] == "ok"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.get("/health/ready").status_code == 200


def test_the_readiness_probe_changes_no_data(client, signed_post, stored_messages):
    signed_post(make_message())
    before = stored_messages()
    for _ in range(3):
        assert client.get("/health/ready").status_code == 200
    assert stored_messages() == before


def test_the_service_opens_the_database_fully_durable(settings):
    database = Database(settings.database_url)
    try:
        with database.engine.connect() as conn:
            # 2 = FULL: every commit is fsynced before the answer, so a 200 survives a host crash.
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA journal_size_limit").scalar_one() == 32 * 1024 * 1024
    finally:
        database.dispose()
