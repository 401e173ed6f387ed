"""The counters kept with the writes always equal what COUNT(*) and GROUP BY say."""

import random

from tests.support.database import fold_counts, run_sql
from tests.support.messages import make_message
from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.engine import Database
from webhook_service.storage.messages import NewMessage, delete_messages_before, insert_messages_if_new, message_stats
from webhook_service.storage.read_model.senders import SENDERS, senders_summary


def counted(url: str) -> tuple[int, int, dict[str, int]]:
    [(total,)] = run_sql(url, "SELECT count(*) FROM messages")
    per_sender = dict(run_sql(url, "SELECT from_msisdn, count(*) FROM messages GROUP BY from_msisdn"))
    return total, len(per_sender), per_sender


def kept(url: str) -> tuple[int, int, dict[str, int]]:
    """What the count tables hold, once every change is folded in."""
    fold_counts(url)
    [(total, senders)] = run_sql(url, "SELECT total_messages, senders_count FROM message_totals")
    per_sender = dict(run_sql(url, "SELECT from_msisdn, message_count FROM sender_counts"))
    return total, senders, per_sender


def read(database: Database) -> tuple[int, int, dict[str, int]]:
    """What a read sees: the count tables and, where counts are deferred, the changes not
    folded yet."""
    with database.read_transaction() as conn:
        total, senders, _top = senders_summary(conn, 10)
        per_sender = {row.key: int(row.n) for row in conn.execute(SENDERS.entries(dialect_of(conn)))}
    return total, senders, per_sender


def test_counters_match_counting_after_random_inserts_duplicates_and_deletes(database_url):
    path = database_url
    rng = random.Random(42)
    database = Database(database_url)
    try:
        for round_number in range(30):
            batch = []
            for _ in range(rng.randint(1, 40)):
                number = rng.randint(0, 300)  # ids repeat: duplicates within and across batches
                day = rng.randint(1, 28)
                payload = make_message(message_id=f"m{number}", ts=f"2024-02-{day:02d}T00:00:00Z")
                payload["from"] = f"+1{rng.randint(0, 12)}"
                batch.append(NewMessage(payload["message_id"], payload["from"], payload["to"], payload["ts"], None))
            with database.write_transaction() as conn:
                insert_messages_if_new(conn, batch)
            if round_number % 4 == 3:
                with database.write_transaction() as conn:
                    delete_messages_before(conn, f"2024-02-{rng.randint(2, 20):02d}T00:00:00Z", rng.randint(1, 15))
            assert read(database) == counted(path), f"read after round {round_number}"
            if round_number % 3 == 2:
                assert kept(path) == counted(path), f"folded after round {round_number}"
        with database.read_transaction() as conn:
            stats = message_stats(conn)
        total, senders, per_sender = counted(path)
        assert (stats.total_messages, stats.senders_count) == (total, senders)
        expected_top = sorted(per_sender.items(), key=lambda item: (-item[1], item[0]))[:10]
        assert [(s.sender, s.count) for s in stats.top_senders] == expected_top
    finally:
        database.dispose()


def test_deleting_every_message_of_a_sender_removes_it_from_the_counts(database_url):
    path = database_url
    database = Database(database_url)
    try:
        with database.write_transaction() as conn:
            insert_messages_if_new(
                conn,
                [
                    NewMessage("old", "+1", "+2", "2020-01-01T00:00:00Z", None),
                    NewMessage("new", "+3", "+2", "2025-01-01T00:00:00Z", None),
                ],
            )
        with database.write_transaction() as conn:
            assert delete_messages_before(conn, "2021-01-01T00:00:00Z", 100) == 1
            assert delete_messages_before(conn, "2021-01-01T00:00:00Z", 100) == 0
    finally:
        database.dispose()
    assert kept(path) == (1, 1, {"+3": 1})


def test_totals_without_filters_or_with_from_alone_come_from_the_counters(client, signed_post, database_url):
    for number in range(3):
        signed_post(make_message(message_id=f"c{number}", **{"from": "+777"}))
    signed_post(make_message(message_id="other", **{"from": "+888"}))
    # A counter that disagrees with the rows shows where totals come from.
    fold_counts(database_url)
    run_sql(database_url, "UPDATE sender_counts SET message_count = 41 WHERE from_msisdn = '+777'")
    run_sql(database_url, "UPDATE message_totals SET total_messages = 99")
    assert client.get("/messages").get_json()["total"] == 99
    assert client.get("/messages?from=%2B777").get_json()["total"] == 41
    assert client.get("/messages?from=%2B999").get_json()["total"] == 0
    assert client.get("/messages?from=%2B777&since=2000-01-01T00:00:00Z").get_json()["total"] == 3
