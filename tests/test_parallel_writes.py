"""PostgreSQL writers store in parallel: no write waits for another unless they store the same
message_id, a transaction that commits late never lands behind a feed reader, and the
counts stay exact while writers and folders run at once."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import text

from tests.support.database import fold_counts, run_sql
from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.engine import Database
from webhook_service.storage.feed import held_back_seconds, latest_position, read_feed
from webhook_service.storage.messages import (
    MessageFilter,
    NewMessage,
    delete_messages_before,
    insert_messages_if_new,
    list_messages,
    message_stats,
)
from webhook_service.storage.migrations import head_revision, upgrade_to_head
from webhook_service.storage.read_model import fold
from webhook_service.storage.read_model.senders import senders_summary

pytestmark = pytest.mark.postgresql_only


def message(message_id: str, sender: str = "+1555", ts: str = "2025-01-01T00:00:00Z", body: str = "hi") -> NewMessage:
    return NewMessage(message_id, sender, "+2", ts, body)


def feed_ids(database: Database, after: int = 0) -> tuple[list[str], int]:
    with database.read_transaction() as conn:
        page = read_feed(conn, after, 1000)
    return [item.message_id for item in page.items], page.next_position


@pytest.fixture
def database(database_url):
    database = Database(database_url)
    yield database
    database.dispose()


def test_a_writer_never_waits_for_another_that_is_still_open(database):
    with database.write_transaction() as first:
        insert_messages_if_new(first, [message("first")])
        # The first transaction holds everything it took; a second one, with no lock wait
        # allowed at all, stores and deletes while the first is open.
        with database.write_transaction() as second:
            second.execute(text("SET LOCAL lock_timeout = '1ms'"))
            assert insert_messages_if_new(second, [message("second", ts="2020-01-01T00:00:00Z")]) == [True]
        with database.write_transaction() as third:
            third.execute(text("SET LOCAL lock_timeout = '1ms'"))
            assert delete_messages_before(third, "2021-01-01T00:00:00Z", 10) == 1
    with database.read_transaction() as conn:
        page = list_messages(conn, MessageFilter(), 10)
        assert ([item.message_id for item in page.items], page.total) == (["first"], 1)


def test_a_transaction_that_commits_late_never_lands_behind_a_reader(database):
    with database.write_transaction() as early:
        insert_messages_if_new(early, [message("early")])
        with database.write_transaction() as late:
            insert_messages_if_new(late, [message("late")])
        # "late" is committed, but "early" may still commit: no reader may pass it yet.
        seen, position = feed_ids(database)
        assert seen == []
        with database.read_transaction() as conn:
            end = latest_position(conn)
    # Readers that stopped at the feed's end or at its first answer read both, in order.
    assert feed_ids(database, position) == (["early", "late"], feed_ids(database)[1])
    assert feed_ids(database, end)[0] == ["early", "late"]


def test_a_transaction_that_stores_after_a_later_one_comes_after_it(database):
    # Begun first but storing last: its position follows the one that stored first.
    with database.write_transaction() as begun_first:
        begun_first.execute(text("SELECT 1"))
        with database.write_transaction() as other:
            insert_messages_if_new(other, [message("stored-first")])
        insert_messages_if_new(begun_first, [message("stored-second")])
    assert feed_ids(database)[0] == ["stored-first", "stored-second"]


def test_positions_of_one_transaction_follow_each_other_across_its_inserts(database):
    with database.write_transaction() as conn:
        insert_messages_if_new(conn, [message("a"), message("b")])
        insert_messages_if_new(conn, [message("c")])
    with database.write_transaction() as conn:
        insert_messages_if_new(conn, [message("d")])
    assert feed_ids(database)[0] == ["a", "b", "c", "d"]


def test_a_database_restored_into_a_cluster_behind_its_positions_feeds_on_after_them(database, database_url):
    with database.write_transaction() as conn:
        insert_messages_if_new(conn, [message("restored-1"), message("restored-2")])
    # pg_restore into another cluster keeps the positions, made from transaction ids the new
    # cluster has not reached: here, a billion transactions ahead of it.
    run_sql(database_url, "UPDATE messages SET id = id + (1000000000::bigint << 16)")
    assert upgrade_to_head(database_url) == head_revision()  # what every start runs
    seen, end = feed_ids(database)
    assert seen == ["restored-1", "restored-2"]
    with database.read_transaction() as conn:
        assert latest_position(conn) >= end
    with database.write_transaction() as conn:
        insert_messages_if_new(conn, [message("stored-after")])
    assert feed_ids(database, end)[0] == ["stored-after"]
    assert feed_ids(database)[0] == ["restored-1", "restored-2", "stored-after"]
    # A later start finds nothing to move.
    offset = run_sql(database_url, "SELECT transaction_offset FROM message_totals")
    upgrade_to_head(database_url)
    assert run_sql(database_url, "SELECT transaction_offset FROM message_totals") == offset


def test_how_long_the_feed_is_held_back_is_measured(database):
    with database.read_transaction() as conn:
        assert held_back_seconds(conn) == 0.0
    with database.write_transaction() as open_one:
        open_one.execute(text("SELECT pg_current_xact_id()"))
        with database.write_transaction() as conn:
            insert_messages_if_new(conn, [message("waiting")])
        time.sleep(0.3)
        with database.read_transaction() as conn:
            assert 0.3 <= held_back_seconds(conn) < 30
    with database.read_transaction() as conn:
        assert held_back_seconds(conn) == 0.0


def test_one_folder_at_a_time_and_reads_exact_before_and_after(database, database_url):
    with database.write_transaction() as conn:
        insert_messages_if_new(conn, [message("x", sender="+1"), message("y", sender="+2")])
    with database.engine.begin() as folding, database.engine.begin() as other:
        assert fold(folding) > 0
        assert fold(other) == 0  # the first folder holds its turn until it commits
        with database.read_transaction() as conn:  # a snapshot before the fold commits
            assert message_stats(conn).total_messages == 2
    assert run_sql(database_url, "SELECT count(*) FROM count_changes") == [(0,)]
    with database.read_transaction() as conn:
        stats = message_stats(conn)
    assert (stats.total_messages, stats.senders_count) == (2, 2)


def test_counts_stay_exact_with_writers_purges_and_folders_at_once(database, database_url):
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        rng = random.Random(number)
        try:
            for batch in range(15):
                messages = [
                    message(
                        f"m{rng.randint(0, 120)}",  # ids repeat across writers: duplicates
                        sender=f"+1{rng.randint(0, 6)}",
                        ts=f"2024-02-{rng.randint(1, 9):02d}T00:00:00Z",
                        body=rng.choice(["order shipped", "you ok", "ok", None, "çà ok"]),
                    )
                    for _ in range(rng.randint(1, 12))
                ]
                with database.write_transaction() as conn:
                    insert_messages_if_new(conn, messages)
                if batch % 5 == 4:
                    with database.write_transaction() as conn:
                        delete_messages_before(conn, f"2024-02-0{rng.randint(2, 5)}T00:00:00Z", rng.randint(1, 8))
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    def folder() -> None:
        while not stop.is_set():
            with database.engine.begin() as conn:
                fold(conn)
            time.sleep(0.005)

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(4)]
    folding = [threading.Thread(target=folder) for _ in range(2)]
    for thread in threads + folding:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    stop.set()
    for thread in folding:
        thread.join(timeout=30)
    assert errors == []
    per_sender = Counter(dict(run_sql(database_url, "SELECT from_msisdn, count(*) FROM messages GROUP BY 1")))
    expected_top = sorted(per_sender.items(), key=lambda item: (-item[1], item[0]))[:3]
    with database.read_transaction() as conn:
        assert senders_summary(conn, 3) == (per_sender.total(), len(per_sender), expected_top)
        assert dialect_of(conn).deferred is not None
    fold_counts(database_url)
    assert dict(run_sql(database_url, "SELECT from_msisdn, message_count FROM sender_counts")) == dict(per_sender)
    assert run_sql(database_url, "SELECT total_messages, senders_count FROM message_totals") == [
        (per_sender.total(), len(per_sender))
    ]
