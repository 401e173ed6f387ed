"""A person's data erased on request: every message from or to one number, from the
database, the deliveries owed and the archives, counted, and never named in the output's log."""

from __future__ import annotations

import json
import time

import duckdb
import pytest
from click.testing import CliRunner

from tests.support.database import fold_counts, run_sql, store_at
from webhook_service.archive.stores import FolderStore
from webhook_service.cli import main
from webhook_service.storage.engine import Database
from webhook_service.storage.forwarding import claim_new, register_destination
from webhook_service.storage.messages import MessageFilter, NewMessage, list_messages, message_stats
from webhook_service.storage.retention import run_retention

DAY = 86_400
PERSON = "+15550001111"


@pytest.fixture
def stored(database_url, monkeypatch, tmp_path):
    """Old messages archived (one file holds the person's alone), and new ones stored."""
    database = Database(database_url)
    try:
        store_at(
            database,
            monkeypatch,
            time.time() - 20 * DAY,
            [NewMessage("old-from", PERSON, "+2", "2025-01-01T00:00:00Z", "mine")],
        )
        store_at(
            database,
            monkeypatch,
            time.time() - 10 * DAY,
            [
                NewMessage("old-to", "+3", PERSON, "2025-01-02T00:00:00Z", "to them"),
                NewMessage("old-other", "+3", "+4", "2025-01-02T00:00:01Z", "not theirs"),
            ],
        )
        archive = FolderStore(tmp_path / "archive")
        assert run_retention(database, 5, "owner", pause=lambda _s: True, archive=archive).archived == 3
        store_at(
            database,
            monkeypatch,
            time.time(),
            [
                NewMessage("new-from", PERSON, "+2", "2025-02-01T00:00:00Z", "mine too"),
                NewMessage("new-to", "+5", PERSON, "2025-02-01T00:00:01Z", None),
                NewMessage("new-other", "+5", "+6", "2025-02-01T00:00:02Z", "keep"),
            ],
        )
        with database.write_transaction() as conn:
            register_destination(conn, "billing", "beginning")
            claim_new(conn, "billing", "me", time.time() + 60, time.time(), 10)
    finally:
        database.dispose()
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ARCHIVE_URL", str(archive.root))
    monkeypatch.setenv("WEBHOOK_SECRET", "erasure-test-secret")
    return archive


def archived_ids(archive: FolderStore) -> list[str]:
    pattern = str(archive.root / "messages" / "*" / "*.parquet")
    return [row[0] for row in duckdb.sql(f"SELECT message_id FROM read_parquet('{pattern}') ORDER BY 1").fetchall()]


def test_erase_removes_a_numbers_messages_everywhere_and_says_only_how_many(stored, database_url):
    archive = stored
    dry = CliRunner().invoke(main, ["erase", "--number", PERSON, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert (
        dry.stdout.strip()
        == "would erase 2 messages from or to the number from the database, and 2 from 2 archive files"
    )
    assert run_sql(database_url, "SELECT count(*) FROM messages") == [(3,)]

    result = CliRunner().invoke(main, ["erase", "--number", PERSON])
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.strip() == "erased 2 messages from or to the number from the database, and 2 from 2 archive files"
    )
    record = json.loads(result.stderr)
    assert record == {
        "event": "erasure",
        "dry_run": False,
        "messages": 2,
        "archived_messages": 2,
        "archive_files": 2,
        "deliveries_ended": 2,
    }
    assert PERSON not in result.stderr and PERSON[1:] not in result.stderr
    database = Database(database_url)
    try:
        with database.read_transaction() as conn:
            assert [m.message_id for m in list_messages(conn, MessageFilter(), 10).items] == ["new-other"]
            stats = message_stats(conn)
            assert (stats.total_messages, stats.senders_count) == (1, 1)
    finally:
        database.dispose()
    assert run_sql(database_url, "SELECT count(*) FROM forward_deliveries") == [(1,)]
    # The file that held the person's message alone is gone; the other holds the rest.
    assert archived_ids(archive) == ["old-other"]
    assert len(archive.keys("messages/")) == 1
    fold_counts(database_url)
    assert run_sql(database_url, "SELECT total_messages, senders_count FROM message_totals") == [(1, 1)]


@pytest.mark.sqlite_only
@pytest.mark.parametrize("number", ["15550001111", "+1 555", "", "+1234567890123456"])
def test_erase_takes_only_an_e164_number(stored, number):
    result = CliRunner().invoke(main, ["erase", "--number", number])
    assert result.exit_code == 2 and "E.164" in result.output
