"""GET /feed: every message once, in the order stored, resumable, long-polled."""

import threading
import time

import pytest
from sqlalchemy import func, select, text

from tests.support.database import run_sql
from tests.support.messages import SECRET, make_message, signed_body
from webhook_service.api.context import DATABASE_KEY
from webhook_service.config import Settings
from webhook_service.storage.commit_signal import stop_all_waiters
from webhook_service.storage.engine import Database, create_database_engine
from webhook_service.storage.feed import newest_position
from webhook_service.storage.messages import delete_messages_before
from webhook_service.storage.migrations import head_revision, upgrade_to_head
from webhook_service.storage.tables import messages


def settled(client, timeout: float = 10.0) -> None:
    """Wait until every stored message is in the feed. On PostgreSQL a transaction still
    running anywhere in the cluster (the app's own count folder, say) holds the feed back
    below its first position until it ends: what these tests assert is order and
    completeness, not that no other transaction was running at the instant of a read."""
    database = client.application.extensions[DATABASE_KEY]
    deadline = time.monotonic() + timeout
    while True:
        with database.engine.connect() as conn:
            stored = conn.execute(select(func.max(messages.c.id))).scalar_one() or 0
            if newest_position(conn) == stored:
                return
        assert time.monotonic() < deadline, "the feed stayed held back"
        time.sleep(0.02)


def feed(client, **query) -> dict:
    settled(client)
    response = client.get("/feed", query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def ids(document: dict) -> list[str]:
    return [item["message_id"] for item in document["data"]]


def walk(client, after: str | None = None, limit: int = 100) -> tuple[list[str], str]:
    """Every message after `after`, page by page; the ids and where the walk ended."""
    seen = []
    query = {} if after is None else {"after": after}
    while True:
        page = feed(client, limit=limit, **query)
        seen += ids(page)
        query = {"after": page["next"]}
        if not page["data"]:
            return seen, page["next"]


def test_an_empty_feed_answers_nothing_and_a_position_to_resume_from(client, signed_post):
    assert feed(client) == {"data": [], "next": "0"}
    latest = feed(client, after="latest")
    assert latest["data"] == []
    # The end of an empty feed is a position like any other: what is stored next follows it.
    signed_post(make_message(message_id="first"))
    assert ids(feed(client, after=latest["next"])) == ["first"]


def test_messages_come_in_the_order_stored_not_by_ts(client, signed_post):
    # A sender's retry arrives late with an old ts: /messages puts it first, the feed last.
    signed_post(make_message(message_id="new", ts="2025-01-15T10:00:00Z"))
    signed_post(make_message(message_id="late-retry", ts="2024-06-01T00:00:00Z", text="x"))
    assert [m["message_id"] for m in client.get("/messages").get_json()["data"]] == ["late-retry", "new"]
    page = feed(client)
    assert ids(page) == ["new", "late-retry"]
    first = page["data"][0]
    assert set(first) == {"message_id", "from", "to", "ts", "text", "created_at"}
    assert first["ts"] == "2025-01-15T10:00:00Z" and first["created_at"].endswith("Z")


def test_walking_next_gives_every_message_once_and_duplicates_add_nothing(client, signed_post):
    for number in range(23):
        signed_post(make_message(message_id=f"m{number:02d}"))
        signed_post(make_message(message_id=f"m{number // 2:02d}", text="a duplicate"))
    seen, end = walk(client, limit=5)
    assert seen == [f"m{number:02d}" for number in range(23)]
    assert feed(client, after=end) == {"data": [], "next": end}
    signed_post(make_message(message_id="after-the-end"))
    assert ids(feed(client, after=end)) == ["after-the-end"]


def test_latest_starts_at_the_current_end(client, signed_post):
    signed_post(make_message(message_id="before"))
    end = feed(client, after="latest")
    assert end["data"] == [] and end["next"] != "0"
    signed_post(make_message(message_id="after"))
    assert ids(feed(client, after=end["next"])) == ["after"]


def test_positions_are_never_reused_after_purges(client, signed_post, settings):
    for number in range(5):
        signed_post(make_message(message_id=f"old{number}", ts=f"2024-01-0{number + 1}T00:00:00Z"))
    _, reader = walk(client)
    database = Database(settings.database_url)
    try:
        # The newest rows go first, then all of them: a rowid alone would be handed out again.
        with database.write_transaction() as conn:
            assert delete_messages_before(conn, "2025-01-01T00:00:00Z", 100) == 5
    finally:
        database.dispose()
    assert feed(client, after=reader) == {"data": [], "next": reader}
    signed_post(make_message(message_id="new"))
    seen, _ = walk(client, after=reader)
    assert seen == ["new"]
    assert walk(client)[0] == ["new"]


def test_a_reader_inside_a_purged_range_goes_on_with_the_next_remaining_message(client, signed_post, settings):
    for number in range(6):
        signed_post(make_message(message_id=f"m{number}", ts=f"2024-01-0{number + 1}T00:00:00Z"))
    first_two = feed(client, limit=2)
    database = Database(settings.database_url)
    try:
        with database.write_transaction() as conn:
            delete_messages_before(conn, "2024-01-05T00:00:00Z", 100)  # m0..m3
    finally:
        database.dispose()
    assert walk(client, after=first_two["next"])[0] == ["m4", "m5"]


@pytest.mark.parametrize(
    ("query", "location"),
    [
        ({"after": "abc"}, "after"),
        ({"after": "-1"}, "after"),
        ({"after": "01"}, "after"),
        ({"after": ""}, "after"),
        ({"after": str(2**63)}, "after"),
        ({"after": "LATEST"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"wait": "-1"}, "wait"),
        ({"wait": "31"}, "wait"),
        ({"wait": "1.5"}, "wait"),
        # Strict whole numbers: no sign, no spaces (a "+" unencoded is one), no leading zeros.
        ({"limit": "+1"}, "limit"),
        ({"limit": " 1"}, "limit"),
        ({"limit": "1\n"}, "limit"),
        ({"limit": "01"}, "limit"),
        ({"wait": "-0"}, "wait"),
    ],
)
def test_bad_parameters_answer_422_naming_them(client, query, location):
    response = client.get("/feed", query_string=query)
    assert response.status_code == 422
    [error] = response.get_json()["detail"]
    assert error["loc"] == ["query", location]


def test_a_position_past_the_feeds_end_answers_422_and_every_handed_out_one_is_taken(client, signed_post):
    signed_post(make_message(message_id="one"))
    end = feed(client, after="latest")["next"]
    # Far past the end: on PostgreSQL the end moves on with every transaction of the cluster
    # (other tests' too), so one just past it now may be within it a moment later.
    for forged in (str(2**63 - 1), str(int(end) + 10**12)):
        response = client.get("/feed", query_string={"after": forged})
        assert response.status_code == 422, forged
        [error] = response.get_json()["detail"]
        assert error["loc"] == ["query", "after"]
    # Every position handed out stays valid, also once more is stored after it.
    signed_post(make_message(message_id="two"))
    assert ids(feed(client, after=end)) == ["two"]
    assert ids(feed(client, after=feed(client)["next"])) == []


@pytest.mark.sqlite_only  # where the end is the newest position itself, and stands still
def test_the_position_just_past_the_feeds_end_answers_422(client, signed_post):
    signed_post(make_message(message_id="one"))
    end = feed(client, after="latest")["next"]
    response = client.get("/feed", query_string={"after": str(int(end) + 1)})
    assert response.status_code == 422
    assert ids(feed(client, after=end)) == []


def test_the_feed_needs_a_read_token_when_tokens_are_set(make_app, database_url):
    token = "feed-reader-token-0123456789"
    client = make_app(Settings(webhook_secrets=("s",), database_url=database_url, api_tokens=(token,))).test_client()
    assert client.get("/feed").status_code == 401
    assert client.get("/feed", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def _held_feed(app, results: list, **query) -> threading.Thread:
    def read():
        started = time.monotonic()
        response = app.test_client().get("/feed", query_string=query)
        results.append((time.monotonic() - started, response.get_json()))

    thread = threading.Thread(target=read)
    thread.start()
    return thread


def _wait_for_waiters(app, count: int) -> None:
    waiters = app.extensions["webhook_service.feed_waiters"]
    deadline = time.monotonic() + 5
    while waiters.waiting < count:
        assert time.monotonic() < deadline, "the long-poll was never held"
        time.sleep(0.01)


def test_a_long_poll_is_answered_as_soon_as_a_message_is_stored(app, client, signed_post):
    results = []
    reader = _held_feed(app, results, after="latest", wait=20)
    _wait_for_waiters(app, 1)
    posted = time.monotonic()
    signed_post(make_message(message_id="awaited"))
    reader.join(timeout=10)
    [(held, document)] = results
    assert ids(document) == ["awaited"]
    assert held < 10 and time.monotonic() - posted < 2


def test_a_long_poll_ends_empty_when_wait_passes(client):
    end = feed(client, after="latest")["next"]
    started = time.monotonic()
    assert feed(client, after=end, wait=1) == {"data": [], "next": end}
    assert 0.9 <= time.monotonic() - started < 5


def test_past_the_waiter_limit_a_reader_is_told_to_come_back_never_given_an_early_empty_page(make_app, database_url):
    app = make_app(Settings(webhook_secrets=("s",), database_url=database_url, feed_max_waiters=1))
    results = []
    held = _held_feed(app, results, wait=20)
    _wait_for_waiters(app, 1)
    started = time.monotonic()
    answer = app.test_client().get("/feed?wait=20")
    assert time.monotonic() - started < 2
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "2"
    assert "too many readers are waiting" in answer.get_json()["detail"]
    # A reader that does not wait is answered as ever.
    assert app.test_client().get("/feed?wait=0").status_code == 200
    stop_all_waiters()
    held.join(timeout=5)
    assert not held.is_alive()


def test_stopping_answers_every_held_request_at_once(make_app, database_url):
    app = make_app(Settings(webhook_secrets=("s",), database_url=database_url))
    results = []
    readers = [_held_feed(app, results, wait=30) for _ in range(3)]
    _wait_for_waiters(app, 3)
    stop_all_waiters()
    for reader in readers:
        reader.join(timeout=5)
    assert [document for _, document in results] == [{"data": [], "next": "0"}] * 3
    assert all(held < 5 for held, _ in results)
    # A stopping process holds nothing new either.
    started = time.monotonic()
    feed(app.test_client(), wait=30)
    assert time.monotonic() - started < 2


def test_an_upgraded_database_keeps_its_rows_in_id_order_and_numbers_on_after_them(empty_database_url, make_app):
    upgrade_to_head(empty_database_url, revision="0004")
    engine = create_database_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            for number, message_id in enumerate(["c", "a", "b"]):
                conn.execute(
                    text(
                        "INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, ts_instant, text, text_folded, "
                        "created_at) VALUES (:id, '+1', '+2', :ts, :instant, NULL, NULL, '2024-01-01T00:00:00.000000Z')"
                    ),
                    {"id": message_id, "ts": f"2024-01-0{3 - number}T00:00:00Z", "instant": f"2024-01-0{3 - number}"},
                )
            conn.execute(text("UPDATE message_totals SET total_messages = 3, senders_count = 1"))
            conn.execute(text("INSERT INTO sender_counts VALUES ('+1', 3)"))
    finally:
        engine.dispose()
    assert upgrade_to_head(empty_database_url) == head_revision()
    assert run_sql(empty_database_url, "SELECT last_position FROM message_totals") == [(3,)]
    app = make_app(Settings(webhook_secrets=(SECRET,), database_url=empty_database_url))
    client = app.test_client()
    assert ids(feed(client)) == ["c", "a", "b"]
    end = feed(client, after="latest")["next"]
    body, headers = signed_body(make_message(message_id="d"), SECRET)
    assert client.post("/webhook", data=body, headers=headers).status_code == 200
    assert ids(feed(client, after=end)) == ["d"]
    assert ids(feed(client)) == ["c", "a", "b", "d"]
