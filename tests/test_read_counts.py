"""The counts kept with the writes for reads at scale (texts per gram, messages per day of ts)
stay equal to counting the rows, and every search plan finds exactly what Python's `in` finds."""

import random
from collections import Counter

import pytest

from tests.support.database import fold_counts, run_sql
from webhook_service.storage import read_model
from webhook_service.storage.dialects import dialect_of, search
from webhook_service.storage.dialects import postgresql as postgresql_dialect
from webhook_service.storage.dialects import sqlite as sqlite_dialect
from webhook_service.storage.engine import Database
from webhook_service.storage.messages import (
    MessageFilter,
    NewMessage,
    delete_messages_before,
    fold_text,
    insert_messages_if_new,
    list_messages,
)
from webhook_service.storage.migrations import upgrade_to_head
from webhook_service.storage.read_model.day_counts import DAYS
from webhook_service.storage.read_model.grams import FOUR_GRAMS, GRAMS
from webhook_service.storage.read_model.kept_counts import KeptCounts
from webhook_service.storage.read_model.timeline import TIMELINE
from webhook_service.timestamps import instant_key

# Few characters, so that grams repeat and short needles are common; quotes, LIKE's
# wildcards, a backslash, NUL and its stand-in, letters that fold to two, an emoji.
ALPHABET = ["a", "b", "A", " ", '"', "%", "_", "\\", "\x00", "\u24b6", "ß", "é", "É", "😀", "x"]


def random_text(rng: random.Random) -> str | None:
    if rng.random() < 0.1:
        return None
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))


def counted_grams(url: str, lengths: tuple[int, ...] = (1, 2, 3)) -> dict[str, int]:
    """What reading every text says, in text_grams' shape (text_four_grams' for (4,))."""
    counts: Counter = Counter()
    for (text,) in run_sql(url, "SELECT text FROM messages"):
        if text:
            folded = fold_text(postgresql_dialect.unescape_nul(text))
            counts.update({folded[i : i + n] for n in lengths for i in range(len(folded) - n + 1)})
    return dict(counts)


def counted_four_grams(database: Database, url: str) -> dict[str, int]:
    """What reading every text says of four-character grams, where the dialect keeps them."""
    return counted_grams(url, (4,)) if database.dialect.longest_counted_gram >= 4 else {}


def counted_days(url: str) -> dict[str, int]:
    return dict(Counter(instant[:10] for (instant,) in run_sql(url, "SELECT ts_instant FROM messages")))


def read_counts(database: Database, kept: KeptCounts, leading: tuple = ()) -> dict[str, int]:
    """What a read sees of a kept count: its table, and the changes not folded yet."""
    with database.read_transaction() as conn:
        return {row.key: int(row.n) for row in conn.execute(kept.entries(dialect_of(conn), leading))}


def test_counts_match_counting_after_random_inserts_duplicates_and_purges(database_url):
    rng = random.Random(11)
    database = Database(database_url)
    try:
        for round_number in range(25):
            batch = [
                NewMessage(
                    f"m{rng.randint(0, 150)}",
                    "+1555",
                    "+2",
                    f"2024-02-{rng.randint(1, 9):02d}T{rng.randint(0, 23):02d}:00:00Z",
                    random_text(rng),
                )
                for _ in range(rng.randint(1, 30))
            ]
            with database.write_transaction() as conn:
                insert_messages_if_new(conn, batch)
            if round_number % 3 == 2:
                with database.write_transaction() as conn:
                    delete_messages_before(conn, f"2024-02-{rng.randint(2, 9):02d}T00:00:00Z", rng.randint(1, 20))
            assert read_counts(database, GRAMS) == counted_grams(database_url), f"after round {round_number}"
            four_grams = counted_four_grams(database, database_url)
            assert read_counts(database, FOUR_GRAMS) == four_grams, f"after round {round_number}"
            assert read_counts(database, DAYS) == counted_days(database_url), f"after round {round_number}"
            if round_number % 4 == 3:
                fold_counts(database_url)
                grams = {gram: texts for gram, texts in run_sql(database_url, "SELECT gram, texts FROM text_grams")}
                assert grams == counted_grams(database_url), f"folded after round {round_number}"
                four = dict(run_sql(database_url, "SELECT gram, texts FROM text_four_grams"))
                assert four == four_grams, f"folded after round {round_number}"
                days = dict(run_sql(database_url, "SELECT day, message_count FROM instant_day_counts"))
                assert days == counted_days(database_url), f"folded after round {round_number}"
        with database.write_transaction() as conn:
            while delete_messages_before(conn, "2100-01-01T00:00:00Z", 100):
                pass
        assert read_counts(database, GRAMS) == read_counts(database, FOUR_GRAMS) == read_counts(database, DAYS) == {}
        fold_counts(database_url)
        assert run_sql(database_url, "SELECT * FROM text_grams") == []
        assert run_sql(database_url, "SELECT * FROM text_four_grams") == []
        assert run_sql(database_url, "SELECT * FROM instant_day_counts") == []
    finally:
        database.dispose()


@pytest.mark.parametrize("common", [0, 3, 20_000], ids=["read-in-order", "some-common", "collected"])
@pytest.mark.parametrize("walk", [0, 10**9], ids=["walk-index", "sort-rows"])
def test_every_plan_finds_what_python_finds(database_url, monkeypatch, common, walk):
    rng = random.Random(5)
    monkeypatch.setattr(search, "COMMON_NEEDLE_TEXTS", common)
    monkeypatch.setattr(sqlite_dialect, "WALK_OVER_SORT", walk)
    monkeypatch.setattr(sqlite_dialect, "PHRASE_MAX_CHARS", 5)  # longer needles narrowed by two pieces
    monkeypatch.setattr(sqlite_dialect, "COUNTED_PHRASE_MAX_CHARS", 8)  # and longer ones counted row by row
    # Both ends of the long needle in a text that does not hold it, and one that does.
    texts = [random_text(rng) for _ in range(120)] + ["aaaaa bbbbb", "xaaaaa_bbbbbx"]
    messages = [
        NewMessage(f"t{number:03d}", f"+1{number % 3}", "+2", f"2024-03-{1 + number % 28:02d}T00:00:00Z", text)
        for number, text in enumerate(texts)
    ]
    # Longer texts than PostgreSQL's held-text sender index holds (2,000 bytes), and one at it.
    long_texts = ["😀" * 1000 + " aaaaa bbbbb", "é" * 997 + "aaaaaa", "é" * 997 + "aaaaaaa"]
    messages += [
        NewMessage(f"u{number}", "+11", "+2", "2024-03-20T00:00:00Z", text) for number, text in enumerate(long_texts)
    ]
    database = Database(database_url)
    try:
        with database.write_transaction() as conn:
            insert_messages_if_new(conn, messages)
        needles = {rng.choice(texts) or "a" for _ in range(10)} | {"AAAAA_BBBBB", "😀 aaa", "éaaaaaa", "aaaaaa"}
        for _ in range(60):
            source = rng.choice([t for t in texts if t]) if rng.random() < 0.7 else random_text(rng) or "b"
            start = rng.randrange(len(source))
            needles.add(source[start : start + rng.randint(1, 8)])
        for needle in sorted(needles):
            for sender, since in ((None, None), ("+11", None), (None, "2024-03-15T00:00:00Z")):
                expected = [
                    m.message_id
                    for m in sorted(messages, key=lambda m: (m.ts, m.message_id))
                    if m.text is not None
                    and fold_text(needle) in fold_text(m.text)
                    and (sender is None or m.sender == sender)
                    and (since is None or m.ts >= since)
                ]
                with database.read_transaction() as conn:
                    page = list_messages(conn, MessageFilter(sender=sender, since=since, text_contains=needle), 500)
                found = [item.message_id for item in page.items]
                assert (found, page.total) == (expected, len(expected)), (needle, sender, since)
    finally:
        database.dispose()


def test_the_migration_counts_what_was_stored_before_it(tmp_path, monkeypatch):

    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade_to_head(url, "0008")
    monkeypatch.setattr(read_model, "KEPT", (TIMELINE,))  # no gram or day counts before 0009
    database = Database(url)
    try:
        with database.write_transaction() as conn:
            insert_messages_if_new(
                conn,
                [
                    NewMessage(f"old{number}", "+1", "+2", f"2024-01-0{1 + number % 2}T00:00:00Z", text)
                    for number, text in enumerate(["Hallo", "hall", None, ""])
                ],
            )
    finally:
        database.dispose()
    upgrade_to_head(url)
    assert dict(run_sql(url, "SELECT gram, texts FROM text_grams")) == counted_grams(url)
    assert dict(run_sql(url, "SELECT gram, texts FROM text_grams"))["hal"] == 2
    assert dict(run_sql(url, "SELECT day, message_count FROM instant_day_counts")) == {"2024-01-01": 2, "2024-01-02": 2}


@pytest.mark.sqlite_only
def test_a_rare_short_needle_is_found_through_the_trigrams_that_hold_it_and_the_short_texts(database_url):
    texts = ["xab", "ab", "zzz", "b", "a b", "abab", "AB!"]
    database = Database(database_url)
    try:
        with database.write_transaction() as conn:
            insert_messages_if_new(
                conn, [NewMessage(f"r{n}", "+1", "+2", "2024-01-01T00:00:00Z", text) for n, text in enumerate(texts)]
            )
        with database.read_transaction() as conn:
            dialect = dialect_of(conn)
            rowid_of = dict(conn.exec_driver_sql("SELECT text, id FROM messages").all())
            for needle, holding in (
                ("ab", ["xab", "ab", "abab", "AB!"]),
                ("b", ["xab", "ab", "b", "a b", "abab", "AB!"]),
            ):
                found = dialect._short_needle_rowids(conn, needle, len(holding))
                assert found == sorted(rowid_of[text] for text in holding), needle
            # Counts that disagree with the index (never the case) fall back to reading every text.
            assert dialect._short_needle_rowids(conn, "ab", 5) is None
    finally:
        database.dispose()


def test_totals_under_since_at_every_time_of_day_equal_counting(database_url):
    # Messages every 50 minutes over three days; `since` at a day's start, in its morning,
    # at noon, in its evening, at its last instant, between days and past every message.
    instants = [
        f"2024-05-{1 + minute // 1440:02d}T{minute // 60 % 24:02d}:{minute % 60:02d}:00Z"
        for minute in range(0, 3 * 1440, 50)
    ]
    database = Database(database_url)
    try:
        with database.write_transaction() as conn:
            insert_messages_if_new(conn, [NewMessage(f"s{n}", "+1", "+2", ts, "x") for n, ts in enumerate(instants)])
        for since in (
            "2024-05-02T00:00:00Z",
            "2024-05-02T06:40:00Z",
            "2024-05-02T06:40:00.000000001Z",
            "2024-05-02T12:00:00Z",
            "2024-05-02T11:59:59.999999999Z",
            "2024-05-02T19:10:00Z",
            "2024-05-02T23:59:59.999999999Z",
            "2024-04-30T12:00:00Z",
            "2024-05-04T00:00:00Z",
        ):
            with database.read_transaction() as conn:
                total = list_messages(conn, MessageFilter(since=since), 1).total
            assert total == sum(1 for ts in instants if instant_key(ts) >= instant_key(since)), since
    finally:
        database.dispose()


def test_deep_offset_pages_skipped_by_the_day_counts_are_the_pages_offset_gives(database_url, monkeypatch):
    from webhook_service.storage import messages as message_storage

    monkeypatch.setattr(message_storage, "SKIP_BY_DAYS_FROM_OFFSET", 1)
    rng = random.Random(13)
    stored = [
        NewMessage(
            f"d{number:03d}",
            "+1",
            "+2",
            f"2024-05-{rng.randint(1, 6):02d}T{rng.choice(['00:00:00', '12:30:00.5', '23:59:59.999'])}Z",
            "x",
        )
        for number in range(150)
    ]
    database = Database(database_url)
    try:
        with database.write_transaction() as conn:
            insert_messages_if_new(conn, stored)
        order = sorted(stored, key=lambda m: (instant_key(m.ts), m.message_id))
        for since in (None, "2024-05-03T12:30:00.5Z", "2024-05-03T00:00:00Z", "2024-04-01T00:00:00Z"):
            expected = [m.message_id for m in order if since is None or instant_key(m.ts) >= instant_key(since)]
            for offset in (1, 7, 24, 25, 26, 60, len(expected) - 1, len(expected), len(expected) + 5, 10**6):
                with database.read_transaction() as conn:
                    page = list_messages(conn, MessageFilter(since=since), 10, offset=offset)
                assert [m.message_id for m in page.items] == expected[offset : offset + 10], (since, offset)
                assert page.total == len(expected)
    finally:
        database.dispose()
