"""GET /stats/timeline: messages per hour or day they were stored, from counts kept with the
writes, exact after purges, with every bad parameter a 422."""

import random
from collections import Counter

import pytest

from tests.support.database import fold_counts, run_sql
from tests.support.messages import make_message
from webhook_service.storage import messages as message_storage
from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.engine import Database
from webhook_service.storage.messages import NewMessage, delete_messages_before, insert_messages_if_new
from webhook_service.storage.migrations import upgrade_to_head
from webhook_service.storage.read_model.timeline import BUCKET_SECONDS, TIMELINE


def store_at(database: Database, monkeypatch, created_at: str, batch: list[NewMessage]) -> None:
    """Insert a batch as if it arrived at `created_at`."""
    monkeypatch.setattr(message_storage, "utc_now_iso", lambda: created_at)
    with database.write_transaction() as conn:
        insert_messages_if_new(conn, batch)
    monkeypatch.undo()


def new_message(message_id: str, ts: str = "2024-02-01T00:00:00Z") -> NewMessage:
    return NewMessage(message_id, "+1555", "+2", ts, "hi")


def counted_by_bucket(url: str) -> dict[tuple[str, str], int]:
    """What GROUP BY over the messages says, in the counters' shape."""
    counts: Counter = Counter()
    for (created_at,) in run_sql(url, "SELECT created_at FROM messages"):
        counts["hour", created_at[:13] + ":00:00Z"] += 1
        counts["day", created_at[:10] + "T00:00:00Z"] += 1
    return dict(counts)


def kept_by_bucket(url: str) -> dict[tuple[str, str], int]:
    return {(bucket, start): count for bucket, start, count in run_sql(url, "SELECT * FROM timeline_counts")}


def read_by_bucket(database: Database) -> dict[tuple[str, str], int]:
    """What a read sees: the table, and the changes not folded yet."""
    with database.read_transaction() as conn:
        return {
            (bucket, row.key): int(row.n)
            for bucket in BUCKET_SECONDS
            for row in conn.execute(TIMELINE.entries(dialect_of(conn), (bucket,)))
        }


def test_counts_match_counting_after_random_inserts_duplicates_and_purges(database_url, monkeypatch):
    rng = random.Random(7)
    database = Database(database_url)
    try:
        for round_number in range(25):
            created_at = f"2025-03-{rng.randint(1, 4):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00.000001Z"
            batch = [
                new_message(f"m{rng.randint(0, 200)}", f"2024-02-{rng.randint(1, 28):02d}T00:00:00Z")
                for _ in range(rng.randint(1, 30))
            ]
            store_at(database, monkeypatch, created_at, batch)
            if round_number % 3 == 2:
                with database.write_transaction() as conn:
                    delete_messages_before(conn, f"2024-02-{rng.randint(2, 28):02d}T00:00:00Z", rng.randint(1, 20))
            assert read_by_bucket(database) == counted_by_bucket(database_url), f"after round {round_number}"
            if round_number % 4 == 3:
                fold_counts(database_url)
                assert kept_by_bucket(database_url) == counted_by_bucket(database_url), f"folded, round {round_number}"
        # Everything purged: no bucket is left, not even at zero.
        with database.write_transaction() as conn:
            while delete_messages_before(conn, "2100-01-01T00:00:00Z", 100):
                pass
        assert read_by_bucket(database) == {}
        fold_counts(database_url)
        assert kept_by_bucket(database_url) == {}
    finally:
        database.dispose()


@pytest.fixture
def spread(database_url, monkeypatch):
    """Messages stored over three hours of two days."""
    database = Database(database_url)
    try:
        store_at(database, monkeypatch, "2025-01-01T22:10:00.000000Z", [new_message("a"), new_message("b")])
        store_at(database, monkeypatch, "2025-01-01T23:59:59.999999Z", [new_message("c")])
        store_at(database, monkeypatch, "2025-01-02T00:00:00.000000Z", [new_message("d"), new_message("a")])
    finally:
        database.dispose()


def test_points_per_hour_and_per_day_oldest_first(client, spread):
    hours = client.get("/stats/timeline?bucket=hour&since=2025-01-01T00:00:00Z&until=2025-01-03T00:00:00Z")
    assert hours.status_code == 200
    assert hours.get_json() == {
        "bucket": "hour",
        "points": [
            {"start": "2025-01-01T22:00:00Z", "count": 2},
            {"start": "2025-01-01T23:00:00Z", "count": 1},
            {"start": "2025-01-02T00:00:00Z", "count": 1},
        ],
    }
    days = client.get("/stats/timeline?bucket=day&since=2024-12-01T00:00:00Z&until=2025-01-05T00:00:00Z").get_json()
    assert days["points"] == [
        {"start": "2025-01-01T00:00:00Z", "count": 3},
        {"start": "2025-01-02T00:00:00Z", "count": 1},
    ]
    # until defaults to now.
    assert client.get("/stats/timeline?bucket=day&since=2025-01-01T12:00:00Z").get_json() == days


@pytest.mark.parametrize(
    ("since", "until", "starts"),
    [
        # The bucket holding since is the first, counted whole.
        ("2025-01-01T22:59:59.9Z", "2025-01-02T01:00:00Z", ["22", "23", "00"]),
        ("2025-01-01T23:00:00Z", "2025-01-02T01:00:00Z", ["23", "00"]),
        # A bucket that starts at until is not included; one that until falls inside is.
        ("2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z", ["22", "23"]),
        ("2025-01-01T00:00:00Z", "2025-01-02T00:00:00.000001Z", ["22", "23", "00"]),
        ("2025-01-01T00:00:00Z", "2025-01-01T22:00:00Z", []),
    ],
)
def test_since_and_until_bounds(client, spread, since, until, starts):
    answer = client.get(f"/stats/timeline?bucket=hour&since={since}&until={until}").get_json()
    assert [point["start"][11:13] for point in answer["points"]] == starts


@pytest.mark.parametrize(
    ("query", "loc", "kind"),
    [
        ("since=2025-01-01T00:00:00Z", "bucket", "missing"),
        ("bucket=week&since=2025-01-01T00:00:00Z", "bucket", "enum"),
        ("bucket=hour", "since", "missing"),
        ("bucket=hour&since=yesterday", "since", "value_error"),
        ("bucket=hour&since=2025-02-30T00:00:00Z", "since", "value_error"),
        ("bucket=hour&since=2025-01-01T00:00:00Z&until=2025-01-01", "until", "value_error"),
        ("bucket=hour&since=2025-01-02T00:00:00Z&until=2025-01-01T00:00:00Z", "until", "value_error"),
        ("bucket=hour&since=2025-01-01T00:00:00Z&until=2025-01-01T00:00:00Z", "until", "value_error"),
        ("bucket=hour&since=9999-01-01T00:00:00Z", "since", "value_error"),
        # 1,001 hours; and a day range of 1,001 days.
        ("bucket=hour&since=2025-01-01T00:00:00Z&until=2025-02-11T16:00:01Z", "since", "value_error"),
        ("bucket=day&since=2000-01-01T00:00:00Z&until=2002-09-28T00:00:01Z", "since", "value_error"),
    ],
)
def test_bad_parameters_are_422_naming_them(client, query, loc, kind):
    answer = client.get(f"/stats/timeline?{query}")
    assert answer.status_code == 422
    [error] = answer.get_json()["detail"]
    assert error["loc"] == ["query", loc] and error["type"] == kind, error


def test_at_most_1000_points_is_allowed(client):
    hours = client.get("/stats/timeline?bucket=hour&since=2025-01-01T00:00:00Z&until=2025-02-11T16:00:00Z")
    days = client.get("/stats/timeline?bucket=day&since=9997-04-07T00:00:00Z&until=9999-12-31T23:59:59.999Z")
    assert hours.status_code == 200 and days.status_code == 200, days.get_json()


def test_deliveries_count_in_the_hour_they_were_stored(client, signed_post):
    for number in range(3):
        assert signed_post(make_message(message_id=f"now-{number}")).status_code == 200
    assert signed_post(make_message(message_id="now-0")).status_code == 200  # a duplicate counts nothing
    answer = client.get("/stats/timeline?bucket=hour&since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z")
    assert answer.status_code == 422  # far too wide for hours
    stored = client.get("/messages").get_json()["data"]
    hour = stored[0]["created_at"][:13] + ":00:00Z"
    answer = client.get(f"/stats/timeline?bucket=hour&since={hour}").get_json()
    assert answer["points"] == [{"start": hour, "count": 3}]


def test_the_migration_counts_the_messages_stored_before_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade_to_head(url, revision="0006")
    run_sql(
        url,
        "INSERT INTO messages (id, message_id, from_msisdn, to_msisdn, ts, ts_instant, created_at) VALUES "
        "(1, 'a', '+1', '+2', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00.000000000Z', '2025-05-05T10:01:00.000000Z'),"
        "(2, 'b', '+1', '+2', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00.000000000Z', '2025-05-05T10:59:00.000000Z'),"
        "(3, 'c', '+1', '+2', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00.000000000Z', '2025-05-06T00:00:00.000000Z')",
    )
    upgrade_to_head(url)
    assert (
        kept_by_bucket(url)
        == counted_by_bucket(url)
        == {
            ("hour", "2025-05-05T10:00:00Z"): 2,
            ("hour", "2025-05-06T00:00:00Z"): 1,
            ("day", "2025-05-05T00:00:00Z"): 2,
            ("day", "2025-05-06T00:00:00Z"): 1,
        }
    )
