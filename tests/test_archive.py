"""Retention archives what it removes first: Parquet files per UTC day of created_at, in a
folder or on S3, read back and checked before any row is deleted; a failed archive deletes
nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.support.database import store_at
from tests.support.servers import free_port, stop_process, wait_until
from webhook_service.archive.parquet import erase_number, read_archive
from webhook_service.archive.stores import ArchiveFailed, FolderStore, archive_store
from webhook_service.storage.engine import Database
from webhook_service.storage.messages import MessageFilter, NewMessage, list_messages
from webhook_service.storage.retention import run_retention, run_state

DAY = 86_400
# 2026-01-10T12:00:00Z and the two days before it: messages stored on three UTC days.
NOON = 1_768_046_400.0


def go_on(_seconds: float) -> bool:
    return True


@pytest.fixture
def database(database_url):
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def stored(database, monkeypatch):
    """Five old messages over two days (one without text, one with NUL, one not ASCII), one new."""
    store_at(
        database,
        monkeypatch,
        NOON - 2 * DAY,
        [
            NewMessage("a\x00nul", "+1", "+2", "2026-01-08T09:00:00Z", "Grüße \x00 aus Köln"),
            NewMessage("b", "+1", "+3", "2026-01-08T09:00:01.5Z", None),
        ],
    )
    store_at(
        database,
        monkeypatch,
        NOON - DAY,
        [NewMessage(f"c{number}", "+4", "+2", "2026-01-09T00:00:00Z", f"text {number}") for number in range(3)],
    )
    store_at(database, monkeypatch, time.time(), [NewMessage("kept", "+1", "+2", "2026-01-10T00:00:00Z", "hi")])


def remaining(database: Database) -> list[str]:
    with database.read_transaction() as conn:
        return [item.message_id for item in list_messages(conn, MessageFilter(), 50).items]


def test_a_folder_archive_holds_every_removed_message_as_sent_and_duckdb_reads_it(database, stored, tmp_path):
    archive = FolderStore(tmp_path / "archive")
    result = run_retention(database, 1, "owner", pause=go_on, archive=archive)
    assert (result.archived, result.removed) == (5, 5)
    assert remaining(database) == ["kept"]
    files = sorted(path.relative_to(archive.root).as_posix() for path in archive.root.rglob("*.parquet"))
    assert [file.split("/")[:2] for file in files] == [
        ["messages", "day=2026-01-08"],
        ["messages", "day=2026-01-09"],
    ]
    assert all(file.endswith(".parquet") and "-" in file.rsplit("/", 1)[1] for file in files)
    assert not list(archive.root.rglob(".partial-*"))
    assert oct((archive.root / files[0]).stat().st_mode & 0o777) == oct(0o600)
    pattern = str(archive.root / "messages" / "*" / "*.parquet")
    rows = duckdb.sql(
        f'SELECT message_id, "from", "to", ts, text, created_at, position, CAST(day AS VARCHAR) AS day '
        f"FROM read_parquet('{pattern}', hive_partitioning = true) ORDER BY position"
    ).fetchall()
    assert [row[:5] for row in rows] == [
        ("a\x00nul", "+1", "+2", "2026-01-08T09:00:00Z", "Grüße \x00 aus Köln"),
        ("b", "+1", "+3", "2026-01-08T09:00:01.5Z", None),
        ("c0", "+4", "+2", "2026-01-09T00:00:00Z", "text 0"),
        ("c1", "+4", "+2", "2026-01-09T00:00:00Z", "text 1"),
        ("c2", "+4", "+2", "2026-01-09T00:00:00Z", "text 2"),
    ]
    assert [row[7] for row in rows] == ["2026-01-08"] * 2 + ["2026-01-09"] * 3
    assert all(row[5].startswith(row[7]) for row in rows)  # created_at on the file's day


class BrokenStore(FolderStore):
    """A store whose writes fail, or whose files read back short."""

    def __init__(self, root: Path, failing: str) -> None:
        super().__init__(root)
        self.failing = failing

    def put(self, key: str, data: bytes) -> None:
        if self.failing == "write":
            raise OSError(28, "No space left on device")
        super().put(key, data)

    def get(self, key: str) -> bytes:
        data = super().get(key)
        if self.failing == "read back":
            table = read_archive(data).slice(0, 1)
            path = self.root / "short.parquet"
            pq.write_table(table, path)
            return path.read_bytes()
        return data


@pytest.mark.parametrize("failing", ["write", "read back"])
def test_a_failed_archive_deletes_nothing_and_the_next_run_retries(database, stored, tmp_path, failing):
    with pytest.raises(ArchiveFailed):
        run_retention(database, 1, "owner", pause=go_on, archive=BrokenStore(tmp_path / "archive", failing))
    assert remaining(database) == ["a\x00nul", "b", "c0", "c1", "c2", "kept"]
    with database.read_transaction() as conn:
        state = run_state(conn)
    assert state.last_outcome.startswith("failed: ") and state.last_completed_at is None
    result = run_retention(database, 1, "owner", pause=go_on, archive=FolderStore(tmp_path / "archive"))
    assert (result.archived, result.removed) == (5, 5) and remaining(database) == ["kept"]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's server mode: an S3-compatible store on a loopback port, stopped after the module."""
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _answers(endpoint), timeout=60), log.read_text()[-2000:]
        yield endpoint
    finally:
        stop_process(process, timeout=10)


def _answers(endpoint: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(endpoint + "/", timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.sqlite_only  # the store is the subject; the folder test covers both databases
def test_an_s3_archive_is_written_and_read_back_on_an_s3_compatible_store(
    database, stored, s3_server, monkeypatch, tmp_path
):
    import boto3

    for name, value in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "test-access-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="archive")
    result = run_retention(database, 1, "owner", pause=go_on, archive=archive_store("s3://archive/webhook/"))
    assert (result.archived, result.removed) == (5, 5)
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket="archive")["Contents"])
    assert [key.rsplit("/", 1)[0] for key in keys] == [
        "webhook/messages/day=2026-01-08",
        "webhook/messages/day=2026-01-09",
    ]
    ids = []
    for key in keys:
        ids += read_archive(s3.get_object(Bucket="archive", Key=key)["Body"].read()).column("message_id").to_pylist()
    assert ids == ["a\x00nul", "b", "c0", "c1", "c2"]
    # Erasure rewrites a file without the number's messages, and removes one left empty.
    store = archive_store("s3://archive/webhook/")
    assert erase_number(store, "+4") == (3, 1)
    assert erase_number(store, "+3") == (1, 1)
    [key] = store.keys("messages/")
    assert read_archive(store.get(key)).column("message_id").to_pylist() == ["a\x00nul"]
