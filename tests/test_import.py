"""Import puts exported and archived messages back: created_at kept, counts exact, each
message once however often it runs, and a bad record named by its file and line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.database import store_at
from webhook_service.archive.stores import FolderStore
from webhook_service.cli import main
from webhook_service.storage.engine import Database
from webhook_service.storage.messages import MessageFilter, NewMessage, list_messages, message_stats
from webhook_service.storage.migrations import upgrade_to_head
from webhook_service.storage.read_model.timeline import BucketRange, read_timeline
from webhook_service.storage.retention import run_retention

DAY = 86_400
EVERY_DAY = BucketRange("day", "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z")


def run(*arguments: str):
    result = CliRunner().invoke(main, list(arguments))
    return result.exit_code, result.output


def everything(url: str) -> tuple[list[tuple], tuple, list]:
    database = Database(url)
    try:
        with database.read_transaction() as conn:
            page = list_messages(conn, MessageFilter(), 100)
            stats = message_stats(conn)
            timeline = read_timeline(conn, EVERY_DAY)
    finally:
        database.dispose()
    rows = sorted((m.message_id, m.sender, m.recipient, m.ts, m.text, m.created_at) for m in page.items)
    return rows, (page.total, stats.total_messages, stats.senders_count), timeline


@pytest.fixture
def source(database_url, monkeypatch, tmp_path) -> tuple[Path, Path]:
    """An export file of the messages still stored, and an archive of those retention removed."""
    database = Database(database_url)
    try:
        store_at(
            database,
            monkeypatch,
            time.time() - 9 * DAY,
            [
                NewMessage("archived", "+1", "+2", "2025-01-01T00:00:00Z", "Grüße \x00 old"),
                NewMessage("archived-2", "+3", "+2", "2025-01-01T00:00:01Z", None),
            ],
        )
        store_at(
            database,
            monkeypatch,
            time.time() - DAY,
            [
                NewMessage("exported", "+1", "+2", "2025-01-02T00:00:00.5Z", "still here"),
                NewMessage("exported-2", "+4", "+2", "2025-01-03T00:00:00Z", "😀"),
            ],
        )
    finally:
        database.dispose()
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("WEBHOOK_SECRET", "import-test-secret")
    exported = tmp_path / "all.jsonl"
    code, output = run("export", "--output", str(exported))
    assert code == 0 and output.startswith("exported 4 messages to ")
    archive = FolderStore(tmp_path / "archive")
    database = Database(database_url)
    try:
        assert run_retention(database, 5, "owner", pause=lambda _s: True, archive=archive).archived == 2
    finally:
        database.dispose()
    [archive_file] = [archive.root / key for key in archive.keys("messages/")]
    return exported, archive_file


def test_import_puts_exported_and_archived_messages_back_exactly_once(
    source, database_url, request, backend, tmp_path, monkeypatch
):
    exported, archive_file = source
    before_rows, _totals, _timeline = everything(database_url)  # what retention left
    if backend == "sqlite":
        empty_database_url = f"sqlite:///{tmp_path / 'restored.db'}"
    else:
        empty_database_url = request.getfixturevalue("empty_database_url")
    upgrade_to_head(empty_database_url)
    monkeypatch.setenv("DATABASE_URL", empty_database_url)
    # The export holds all four (it ran before retention); the archive two of them again.
    assert run("import", str(exported), str(archive_file)) == (
        0,
        "imported 4 messages (2 stored already) from 2 files\n",
    )
    rows, totals, timeline = everything(empty_database_url)
    assert [row[0] for row in rows] == ["archived", "archived-2", "exported", "exported-2"]
    assert ("archived", "+1", "+2", "2025-01-01T00:00:00Z", "Grüße \x00 old") == rows[0][:5]
    assert rows[1][4] is None
    assert set(before_rows) <= set(rows)  # the same created_at as where they came from
    assert totals == (4, 4, 3)
    assert sum(count for _day, count in timeline) == 4 and len(timeline) == 2  # by their own days
    # Again: nothing new.
    assert run("import", str(archive_file), str(exported)) == (
        0,
        "imported 0 messages (6 stored already) from 2 files\n",
    )
    assert everything(empty_database_url)[1] == (4, 4, 3)


GOOD = {
    "message_id": "good",
    "from": "+1",
    "to": "+2",
    "ts": "2025-01-01T00:00:00Z",
    "text": "ok",
    "created_at": "2025-01-01T00:00:00.000000Z",
}


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({**GOOD, "message_id": "x", "from": "123"}), "from:"),
        (json.dumps({key: value for key, value in GOOD.items() if key != "created_at"}), "created_at:"),
        (json.dumps({**GOOD, "created_at": "yesterday"}), "created_at:"),
    ],
)
def test_a_bad_record_is_named_by_file_and_line_and_what_came_before_is_stored(
    database_url, monkeypatch, tmp_path, line, reason
):
    good = {
        "message_id": "good",
        "from": "+1",
        "to": "+2",
        "ts": "2025-01-01T00:00:00Z",
        "text": "ok",
        "created_at": "2025-01-01T00:00:00.000000Z",
    }
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + line + "\n", encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, output = run("import", str(path))
    assert code == 1 and f"{path}:3: " in output and reason in output and "run import again" in output
    assert "Traceback" not in output
    assert [row[0] for row in everything(database_url)[0]] == []  # the batch with the bad line was not written
    path.write_text(json.dumps(good) + "\n", encoding="utf-8")
    assert run("import", str(path)) == (0, "imported 1 messages (0 stored already) from 1 files\n")


@pytest.mark.sqlite_only
def test_a_file_that_is_neither_text_nor_parquet_is_refused(database_url, monkeypatch, tmp_path):
    path = tmp_path / "binary.bin"
    path.write_bytes(b"\xff\xfe\x00garbage")
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, output = run("import", str(path))
    assert code == 1 and "not UTF-8 text, nor a Parquet file" in output
