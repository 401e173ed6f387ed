"""Retention removes exactly the messages stored longer ago than RETENTION_DAYS, one process
at a time per database, keeping counts, the feed and the deliveries owed exact."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.support.database import fold_counts, run_sql, store_at
from webhook_service.cli import main
from webhook_service.storage import retention
from webhook_service.storage.engine import Database
from webhook_service.storage.feed import read_feed
from webhook_service.storage.forwarding import claim_new, register_destination
from webhook_service.storage.messages import (
    MessageFilter,
    NewMessage,
    list_messages,
    message_stats,
)
from webhook_service.storage.read_model.timeline import BucketRange, read_timeline
from webhook_service.storage.retention import Pace, RetentionRunner, RunState, run_retention, run_state

DAY = 86_400


def message(message_id: str, sender: str = "+1555", text: str | None = "order shipped") -> NewMessage:
    return NewMessage(message_id, sender, "+2", "2025-01-01T00:00:00Z", text)


@pytest.fixture
def database(database_url):
    database = Database(database_url)
    yield database
    database.dispose()


def test_a_run_removes_exactly_what_was_stored_before_the_period_and_keeps_everything_exact(
    database, database_url, monkeypatch
):
    now = time.time()
    store_at(database, monkeypatch, now - 40 * DAY, [message("old-1", "+1"), message("old-2", "+2", "you")])
    store_at(database, monkeypatch, now - 31 * DAY, [message("old-3", "+1", None)])
    store_at(database, monkeypatch, now - 29 * DAY, [message("kept-1", "+2")])
    store_at(database, monkeypatch, now - 60, [message("kept-2", "+3", "ok")])
    with database.read_transaction() as conn:
        reader_position = read_feed(conn, 0, 1).next_position  # a reader inside the removed range
    # A forwarder owes deliveries of an old message and of a kept one.
    with database.write_transaction() as conn:
        register_destination(conn, "billing", "beginning")
        claimed = claim_new(conn, "billing", "me", now + 60, now, 4).claimed
    assert len(claimed) == 4

    result = run_retention(database, 30, "owner-a", pause=lambda seconds: True, pace=Pace(2, 2.0))  # several batches

    assert (result.removed, result.deliveries_ended, result.outcome) == (3, 3, "completed")
    with database.read_transaction() as conn:
        page = list_messages(conn, MessageFilter(), 50)
        assert sorted(item.message_id for item in page.items) == ["kept-1", "kept-2"] and page.total == 2
        assert list_messages(conn, MessageFilter(text_contains="order"), 50).total == 1
        assert list_messages(conn, MessageFilter(sender="+1"), 50).total == 0
        stats = message_stats(conn)
        assert (stats.total_messages, stats.senders_count) == (2, 2)
        days = read_timeline(conn, BucketRange("day", "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"))
        assert sum(count for _start, count in days) == 2
        assert [item.message_id for item in read_feed(conn, reader_position, 10).items] == ["kept-1", "kept-2"]
        state = run_state(conn)
    assert state.last_outcome == "completed" and state.last_removed == 3 and state.last_completed_at >= now
    owed = run_sql(database_url, "SELECT count(*) FROM forward_deliveries")
    assert owed == [(1,)]  # the kept message's delivery is still owed
    fold_counts(database_url)
    assert run_sql(database_url, "SELECT total_messages, senders_count FROM message_totals") == [(2, 2)]


def test_one_process_at_a_time_and_a_dead_runners_lease_runs_out(database, monkeypatch):
    store_at(database, monkeypatch, time.time() - 10 * DAY, [message("old")])
    holding = []

    def held_by_a(seconds: float) -> bool:
        # While a's run pauses between batches, b finds the run taken.
        holding.append(run_retention(database, 1, "owner-b"))
        return True

    store_at(database, monkeypatch, time.time() - 10 * DAY, [message("older")])
    assert run_retention(database, 1, "owner-a", pause=held_by_a, pace=Pace(1, 2.0)).removed == 2
    assert holding and all(result is None for result in holding)
    # A runner that died holding the lease: another takes over once the lease has run out.
    store_at(database, monkeypatch, time.time() - 10 * DAY, [message("again")])
    with database.write_transaction() as conn:
        assert retention._take_lease(conn, "dead-owner", time.time())
    assert run_retention(database, 1, "owner-b") is None
    past_the_lease = time.time() + retention.LEASE_SECONDS + 1
    monkeypatch.setattr(retention.time, "time", lambda: past_the_lease)
    assert run_retention(database, 1, "owner-b").removed == 1


def test_a_stopping_process_ends_its_run_between_batches_as_stopped(database, monkeypatch):
    store_at(database, monkeypatch, time.time() - 3 * DAY, [message(f"m{number}") for number in range(5)])
    result = run_retention(database, 1, "owner", pause=lambda seconds: False, pace=Pace(2, 2.0))
    assert (result.removed, result.outcome) == (2, "stopped")
    with database.read_transaction() as conn:
        state = run_state(conn)
        assert list_messages(conn, MessageFilter(), 10).total == 3
    assert state.last_outcome.startswith("stopped") and state.last_completed_at is None
    # Due again soon, like a failed run; a completed one an hour after it started.
    assert RetentionRunner._due(state, state.last_started_at + retention.RETRY_FAILED_AFTER_SECONDS)
    assert not RetentionRunner._due(state, state.last_started_at + 60)
    done = RunState(last_started_at=1000.0, last_completed_at=1001.0, last_outcome="completed", last_removed=0)
    assert not RetentionRunner._due(done, 1000.0 + retention.RUN_EVERY_SECONDS - 1)
    assert RetentionRunner._due(done, 1000.0 + retention.RUN_EVERY_SECONDS)
    assert RetentionRunner._due(None, 0.0)


def test_the_runner_looks_soon_after_start_and_tells_what_it_saw_and_did(database, monkeypatch):
    store_at(database, monkeypatch, time.time() - 5 * DAY, [message("old")])
    store_at(database, monkeypatch, time.time() - 3600, [message("new")])
    seen, ran = [], []
    runner = RetentionRunner(
        database, 2, observe=lambda state, oldest: seen.append(oldest), ran=ran.append, first_look=0.01, look_every=0.05
    )
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        runner.close()
    [result] = ran  # ran once: the next looks found it not due
    assert (result.removed, result.outcome) == (1, "completed")
    assert seen[0] < seen[-1]  # the oldest stored message is newer after the run


def test_the_retention_command(database, database_url, monkeypatch):
    store_at(database, monkeypatch, time.time() - 9 * DAY, [message("old"), message("old-2")])
    store_at(database, monkeypatch, time.time(), [message("new")])
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("RETENTION_DAYS", raising=False)
    runner = CliRunner()
    unset = runner.invoke(main, ["retention"])
    assert unset.exit_code == 2 and "RETENTION_DAYS is not set" in unset.output
    monkeypatch.setenv("RETENTION_DAYS", "7")
    dry = runner.invoke(main, ["retention", "--dry-run"])
    assert dry.exit_code == 0 and dry.output.startswith("would remove 2 messages stored before ")
    assert runner.invoke(main, ["retention", "--batch", "0"]).exit_code == 2  # a usage error, nothing removed
    paused = []
    monkeypatch.setattr(retention, "_sleep", lambda seconds: paused.append(seconds) or True)
    done = runner.invoke(main, ["retention", "--batch", "1"])
    assert done.exit_code == 0 and done.output.startswith("removed 2 messages stored before "), done.output
    assert paused == [0.0, 0.0]  # two batches of one, as fast as the database goes: no pauses
    assert run_sql(database_url, "SELECT count(*) FROM count_changes") == [(0,)]  # folded
    with database.read_transaction() as conn:
        assert [item.message_id for item in list_messages(conn, MessageFilter(), 10).items] == ["new"]


def test_the_commands_pace_removes_in_large_batches_without_pauses_and_the_services_pauses(database, monkeypatch):
    store_at(
        database, monkeypatch, time.time() - 3 * DAY, [message(f"m{number}", f"+1{number % 3}") for number in range(7)]
    )
    paused = []

    def pause(seconds: float) -> bool:
        paused.append(seconds)
        return True

    result = run_retention(database, 1, "owner", pause=pause, pace=Pace(retention.COMMAND_BATCH, 0.0))
    assert (result.removed, result.outcome, paused) == (7, "completed", [0.0])  # one batch, no pause
    store_at(database, monkeypatch, time.time() - 3 * DAY, [message(f"n{number}") for number in range(3)])
    paused.clear()
    assert run_retention(database, 1, "owner", pause=pause).removed == 3  # the service's pace
    assert len(paused) == 1 and paused[0] > 0
    with database.read_transaction() as conn:
        assert message_stats(conn).total_messages == 0


@pytest.mark.sqlite_only
def test_the_sqlite_file_reuses_what_removed_messages_freed(database, database_url, monkeypatch):
    """Under steady ingestion with retention, the file stops growing: SQLite reuses the pages
    removed messages freed (it never gives them back to the file system without a VACUUM)."""
    words = ["order", "shipped", "you", "café", "tomorrow", "pick", "up", "late"]

    def day_of_messages(day: int) -> list[NewMessage]:
        texts = (" ".join(words[(day + number + k) % len(words)] for k in range(6)) for number in range(2000))
        return [message(f"d{day}-{number}", f"+1{number % 50}", text) for number, text in enumerate(texts)]

    def file_pages() -> int:
        return run_sql(database_url, "PRAGMA page_count")[0][0]

    sizes = []
    for day in range(8):
        store_at(database, monkeypatch, time.time() - (10 - day) * DAY - DAY / 2, day_of_messages(day))
        if day >= 2:  # two days kept: each day's run removes one day
            assert run_retention(database, 12 - day, "owner", pause=lambda seconds: True).removed == 2000
        sizes.append(file_pages())
    with database.read_transaction() as conn:
        assert message_stats(conn).total_messages == 2 * 2000
    # The first days grow the file (a day adds about a third); once a day is removed for every
    # day stored, it stays as it is.
    assert sizes[1] > sizes[0] * 1.3 and sizes[-1] <= sizes[-4] * 1.02, sizes


@pytest.mark.sqlite_only
def test_a_large_removal_has_a_larger_page_cache_until_its_commit_and_the_connection_gets_its_own_back(
    database, monkeypatch
):
    """Removals of thousands of rows spill a serving connection's small page cache (about a
    fifth slower); the pooled connection goes back to serving requests with the small one."""
    from webhook_service.storage.dialects import sqlite as sqlite_dialect

    def cache_kib(conn) -> int:
        return -conn.connection.driver_connection.execute("PRAGMA cache_size").fetchone()[0]

    store_at(database, monkeypatch, time.time() - 3 * DAY, [message("old")])
    with database.write_transaction(large=True) as conn:
        assert cache_kib(conn) == sqlite_dialect.LARGE_TRANSACTION_CACHE_KIB
        connection = conn.connection.driver_connection
    with database.write_transaction() as conn:
        assert conn.connection.driver_connection is connection  # the same pooled connection
        assert cache_kib(conn) == sqlite_dialect.CACHE_KIB_PER_CONNECTION
    with pytest.raises(ZeroDivisionError), database.write_transaction(large=True):
        1 / 0  # noqa: B018 - a failed large transaction gives the small cache back too
    with database.write_transaction() as conn:
        assert conn.connection.driver_connection is connection
        assert cache_kib(conn) == sqlite_dialect.CACHE_KIB_PER_CONNECTION
    # A database error discards the connection: the error is the database's, as for any write.
    with pytest.raises(OperationalError, match="no such table"), database.write_transaction(large=True) as conn:
        conn.execute(text("DELETE FROM no_such_table"))
