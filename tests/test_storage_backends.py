"""What must hold the same on SQLite and PostgreSQL, and what PostgreSQL needs of its own:
code point order whatever the server's collation, NUL kept, migrations that take turns,
every read on an index, a read budget, and passwords kept out of messages."""

from __future__ import annotations

import re
import threading
import time

import pytest
from sqlalchemy import event, insert, select, text

from tests.support.database import fold_counts, run_sql
from tests.support.messages import make_message
from tests.support.postgres import APP_PASSWORD, APP_USER
from tests.support.servers import wait_until
from webhook_service.config import ConfigError, Settings, database_url_from_setting
from webhook_service.storage.dialects import dialect_for_url
from webhook_service.storage.engine import Database, create_database_engine
from webhook_service.storage.messages import MessageFilter, delete_counted, list_messages
from webhook_service.storage.migrations import MigrationFailed, head_revision, migrate, upgrade_to_head
from webhook_service.storage.read_model.grams import FOUR_GRAMS, count_grams
from webhook_service.storage.tables import messages, text_four_grams, text_grams

# Ids whose order differs between code points and a language collation (ICU en-US puts
# "a1" before "B1" and ignores nothing here, but still orders case and symbols its way).
AWKWARD_IDS = ["B1", "a1", "a-b", "ab", "a_c", "Z", "é", "e\u0301", "a\x00", "a\x01", "a", "\x01x", "\x00", "~"]


def test_message_ids_order_by_code_point_on_every_backend(client, signed_post):
    for message_id in AWKWARD_IDS:
        assert signed_post(make_message(message_id=message_id)).status_code == 200
    body = client.get("/messages?limit=100").get_json()
    assert [item["message_id"] for item in body["data"]] == sorted(AWKWARD_IDS)
    # Keyset paging walks the same order, one message a page.
    walked, cursor = [], None
    while True:
        page = client.get("/messages?limit=1" + (f"&cursor={cursor}" if cursor else "")).get_json()
        walked += [item["message_id"] for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == sorted(AWKWARD_IDS)


def test_nul_in_ids_and_texts_is_stored_and_returned_exactly(client, signed_post):
    texts = {"n1": "before\x00after", "n2": "\x01\x00\x01\x02", "n3": "plain \\x01 text", "a\x00b": "id with NUL"}
    for message_id, message_text in texts.items():
        assert signed_post(make_message(message_id=message_id, text=message_text)).status_code == 200
    # A second delivery of the NUL id is a duplicate, whatever its body.
    assert signed_post(make_message(message_id="a\x00b", text="changed")).status_code == 200
    body = client.get("/messages").get_json()
    assert {item["message_id"]: item["text"] for item in body["data"]} == texts
    assert client.get("/messages", query_string={"q": "\x00AFTER"}).get_json()["total"] == 1
    assert client.get("/messages", query_string={"q": "\x01\x02"}).get_json()["total"] == 1
    assert client.get("/messages", query_string={"from": "+1\x00"}).get_json()["total"] == 0


def test_a_page_and_its_total_come_from_one_snapshot_while_others_write(database_url):
    from webhook_service.storage.messages import NewMessage, insert_messages_if_new

    def deliver(message_id: str) -> None:
        with database.write_transaction() as conn:
            assert insert_messages_if_new(conn, [NewMessage(message_id, "+1", "+2", "2025-01-15T10:00:00Z", "hi")])

    database = Database(database_url)
    try:
        deliver("a")
        with database.read_transaction() as conn:
            first = list_messages(conn, MessageFilter(since="2025-01-01T00:00:00Z"), 10)
            # Committed by another connection between the reads of one request.
            deliver("b")
            second = list_messages(conn, MessageFilter(since="2025-01-01T00:00:00Z"), 10)
        assert (first.total, [m.message_id for m in first.items]) == (1, ["a"])
        assert (second.total, [m.message_id for m in second.items]) == (1, ["a"])
        with database.read_transaction() as conn:
            assert list_messages(conn, MessageFilter(since="2025-01-01T00:00:00Z"), 10).total == 2
    finally:
        database.dispose()


def test_migrations_build_exactly_the_tables_in_code(empty_database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from webhook_service.storage.tables import is_outside_metadata, metadata

    assert upgrade_to_head(empty_database_url) == head_revision()
    engine = create_database_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"include_name": lambda name, type_, _parents: not is_outside_metadata(name, type_)}
            )
            differences = [
                # Column comments document the tables in code; SQLite keeps none, so neither do the migrations.
                change
                for change in compare_metadata(context, metadata)
                if not (isinstance(change, list) and all(item[0] == "modify_comment" for item in change))
            ]
            assert differences == []
    finally:
        engine.dispose()


def test_hosts_migrating_one_new_database_at_once_take_turns(empty_database_url):
    results, errors = [], []

    def start():
        try:
            results.append(upgrade_to_head(empty_database_url))
        except Exception as error:  # noqa: BLE001 - every failure is the test's finding
            errors.append(error)

    threads = [threading.Thread(target=start, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "migrations still waiting on each other after 60 s"
    assert errors == [] and results == [head_revision()] * 4


def test_a_database_at_an_older_revision_upgrades_in_place(empty_database_url, make_app):
    upgrade_to_head(empty_database_url, revision="0001")
    engine = create_database_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            for number, sender in enumerate(["+2", "+1", "+2"]):
                conn.execute(
                    text(
                        "INSERT INTO messages (message_id, from_msisdn, to_msisdn, ts, ts_instant, text, text_folded, "
                        "created_at) VALUES (:id, :sender, '+9', '2024-01-01T00:00:00Z', "
                        "'2024-01-01T00:00:00.000000000Z', :text, :folded, '2024-01-01T00:00:00.000000Z')"
                    ),
                    {
                        "id": f"B{number}" if number else "a0",
                        "sender": sender,
                        "text": "Old Text",
                        "folded": "old text",
                    },
                )
    finally:
        engine.dispose()
    assert upgrade_to_head(empty_database_url) == head_revision()
    client = make_app(Settings(webhook_secrets=("s",), database_url=empty_database_url)).test_client()
    assert client.get("/stats").get_json()["total_messages"] == 3
    assert client.get("/stats").get_json()["messages_per_sender"] == [
        {"from": "+2", "count": 2},
        {"from": "+1", "count": 1},
    ]
    assert [item["message_id"] for item in client.get("/messages?q=OLD%20TEXT").get_json()["data"]] == [
        "B1",
        "B2",
        "a0",
    ]
    # Four characters: on PostgreSQL counted from the four-character grams, filled by 0018.
    assert client.get("/messages?q=D%20TE").get_json()["total"] == 3
    four_grams = dict(run_sql(empty_database_url, "SELECT gram, texts FROM text_four_grams"))
    counted = {"old ": 3, "ld t": 3, "d te": 3, " tex": 3, "text": 3}
    assert four_grams == (counted if dialect_for_url(empty_database_url).longest_counted_gram == 4 else {})


def test_postgresql_urls_are_read_for_psycopg_3_and_never_echo_the_password():
    assert database_url_from_setting("postgresql://u:pw@db:5432/app") == "postgresql+psycopg://u:pw@db:5432/app"
    assert database_url_from_setting("postgresql+psycopg://u:pw@db/app") == "postgresql+psycopg://u:pw@db/app"
    for bad in (
        "postgresql+asyncpg://u:secret-pw@db/app",
        "postgresql+psycopg2://u:secret-pw@db/app",
        "postgresql://u:secret-pw@db:5432/",
    ):
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({"DATABASE_URL": bad})
        assert "DATABASE_URL" in str(refused.value) and "secret-pw" not in str(refused.value)
    settings = Settings.from_env({"DATABASE_URL": "postgresql://u:secret-pw@db/app", "DATABASE_POOL_SIZE": "4"})
    assert "secret-pw" not in repr(settings) and settings.database_pool_size == 4


@pytest.mark.postgresql_only
def test_a_wrong_password_fails_the_start_in_one_line_without_the_password(postgres_cluster):
    url = postgres_cluster.url(postgres_cluster.migrated_template, password="wrong-password-xyz")
    with pytest.raises(MigrationFailed) as failed:
        migrate(url)
    message = str(failed.value)
    assert "password authentication failed" in message
    assert "wrong-password-xyz" not in message and APP_PASSWORD not in message and "\n" not in message


@pytest.mark.postgresql_only
def test_without_pg_trgm_and_the_right_to_create_it_the_start_says_what_to_run(postgres_cluster):
    name = postgres_cluster.create_database(owner="postgres")
    with postgres_cluster.admin(name) as conn:
        conn.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {APP_USER}")
    with pytest.raises(MigrationFailed) as refused:
        migrate(postgres_cluster.url(name))
    message = str(refused.value)
    assert f"'CREATE EXTENSION pg_trgm;' in {name}" in message and "\n" not in message
    with postgres_cluster.admin(name) as conn:
        conn.execute("CREATE EXTENSION pg_trgm")
    assert migrate(postgres_cluster.url(name)) == head_revision()


@pytest.mark.postgresql_only
def test_each_worker_pool_holds_at_most_its_threads_and_reconnects_after_a_dropped_connection(database_url):
    database = Database(database_url, pool_size=3)
    try:
        assert database.engine.pool.size() == 3
        with database.read_transaction() as conn:
            backend_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        engine = create_database_engine(database_url)
        with engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend_pid})
            admin.commit()
            # Terminating only signals the backend: wait until it has closed the connection.
            gone = text("SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = :pid)")

            def backend_gone() -> bool:
                answer = admin.execute(gone, {"pid": backend_pid}).scalar_one()
                admin.commit()  # statistics are read once per transaction
                return answer

            assert wait_until(backend_gone, timeout=10)
        engine.dispose()
        # The pooled connection is dead; the checkout replaces it before the read uses it.
        with database.read_transaction() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != backend_pid
    finally:
        database.dispose()


def _seed(url: str, rows: int) -> None:
    """Rows straight in SQL (fast), with counters to match."""
    engine = create_database_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO messages (id, message_id, from_msisdn, to_msisdn, ts, ts_instant, text, text_folded, "
                    "created_at) SELECT i, 'm' || lpad(i::text, 7, '0'), '+1' || (i % 500), '+2', "
                    "to_char(timestamp '2024-01-01' + i * interval '1 minute', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                    "to_char(timestamp '2024-01-01' + i * interval '1 minute', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS.\"000000000Z\"'), 'Text ' || md5(i::text), 'text ' || md5(i::text), "
                    "'2024-01-01T00:00:00.000000Z' FROM generate_series(1, :rows) AS i"
                ),
                {"rows": rows},
            )
            conn.execute(text("DELETE FROM sender_counts"))
            conn.execute(
                text("INSERT INTO sender_counts SELECT from_msisdn, count(*) FROM messages GROUP BY from_msisdn")
            )
            conn.execute(
                text(
                    "UPDATE message_totals SET total_messages = (SELECT count(*) FROM messages), "
                    "senders_count = (SELECT count(*) FROM sender_counts), last_position = :rows"
                ),
                {"rows": rows},
            )
            folded = conn.execute(select(messages.c.text_folded)).scalars().all()
            conn.execute(insert(text_grams), [{"gram": g, "texts": n} for g, n in count_grams(folded).items()])
            four_grams = FOUR_GRAMS.counted({"text_folded": one} for one in folded)
            conn.execute(insert(text_four_grams), [{"gram": g, "texts": n} for g, n in four_grams.items()])
            conn.execute(text("DELETE FROM instant_day_counts"))
            conn.execute(
                text(
                    "INSERT INTO instant_day_counts SELECT substr(ts_instant, 1, 10), count(*) FROM messages "
                    "GROUP BY substr(ts_instant, 1, 10)"
                )
            )
        # As autovacuum leaves a table it has caught up with: statistics, and the visibility
        # map that lets an index alone answer.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


@pytest.mark.postgresql_only
@pytest.mark.parametrize(
    ("message_filter", "index"),
    [
        (MessageFilter(), "ix_messages_ts_instant"),
        (MessageFilter(sender="+1123"), "ix_messages_from_ts_instant"),
        (MessageFilter(since="2024-01-30T00:00:00Z"), "ix_messages_ts_instant"),
        # Texts are "Text " + md5(i): a piece of md5("777") and of md5("517") (sender +117).
        (MessageFilter(text_contains="5925884110"), "ix_messages_text_letters_trgm"),
        # Across the space: text 1 is "text " + md5("1").
        (MessageFilter(text_contains="t c4ca4238a0"), "ix_messages_text_letters_trgm"),
        (MessageFilter(sender="+117", text_contains="7b94cb"), "ix_messages_from_ts_instant"),
        # The count reads the texts the sender index holds (no table row).
        (MessageFilter(sender="+117", text_contains="7b94cb"), "Index Only Scan using ix_messages_from_ts_held_text"),
    ],
)
def test_every_read_on_postgresql_uses_an_index(database_url, message_filter, index):
    _seed(database_url, 50_000)
    database = Database(database_url)
    try:
        page, plans = _read_and_its_plans(database, message_filter)
        assert page.items
        assert not any("Seq Scan on messages" in plan for plan in plans), plans
        assert any(index in plan for plan in plans), plans
    finally:
        database.dispose()


def _read_and_its_plans(database: Database, message_filter: MessageFilter, analyze: bool = False):
    """A page of `message_filter`, and the EXPLAIN (ANALYZE, when asked: the rows each step
    read) of every statement on messages it ran."""
    statements = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "messages" in statement and "set_config" not in statement:
            statements.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", capture)
    try:
        with database.read_transaction() as conn:
            page = list_messages(conn, message_filter, 50)
    finally:
        event.remove(database.engine, "before_cursor_execute", capture)
    with database.read_transaction() as conn:
        driver = conn.connection.driver_connection
        explain = "EXPLAIN (ANALYZE) " if analyze else "EXPLAIN "
        plans = ["\n".join(row[0] for row in driver.execute(explain + sql, args)) for sql, args in statements]
    return page, plans


@pytest.mark.postgresql_only
def test_a_rare_short_needle_on_postgresql_is_found_through_indexes_without_testing_every_text(database_url):
    """pg_trgm has no trigram of `zé`: its texts are found through the stored trigrams that
    hold it and the short-text index (never a scan of every text), exactly."""
    from webhook_service.storage.messages import NewMessage, insert_messages_if_new

    _seed(database_url, 50_000)
    database = Database(database_url)
    stored = [("ze-1", "zé"), ("ze-2", "Café ZÉ!"), ("ze-3", "azéa"), ("ze-4", "z é"), ("ze-5", "é")]
    with database.write_transaction() as conn:
        insert_messages_if_new(conn, [NewMessage(mid, "+1", "+2", "2025-01-01T00:00:00Z", t) for mid, t in stored])
    fold_counts(database_url)
    try:
        page, plans = _read_and_its_plans(database, MessageFilter(text_contains="zé"))
        assert [item.message_id for item in page.items] == ["ze-1", "ze-2", "ze-3"] and page.total == 3
        assert not any("Seq Scan on messages" in plan for plan in plans), plans
        assert any("ix_messages_text_length" in plan for plan in plans), plans
        assert any("ix_messages_text_letters_trgm" in plan for plan in plans), plans
    finally:
        database.dispose()


def test_needles_with_spaces_and_marks_are_found_exactly_beside_texts_that_hold_the_letters_standing_in_for_them(
    database_url,
):
    """On PostgreSQL the trigram index is over the text with its spaces and common marks
    replaced by letters (tables.TEXT_STAND_INS); a text may hold those letters itself, and is
    never taken for one with a space or a mark, nor the other way round."""
    from webhook_service.storage.messages import NewMessage, insert_messages_if_new
    from webhook_service.storage.tables import TEXT_STAND_INS

    letter = dict(TEXT_STAND_INS)
    space, bang, comma = letter[" "], letter["!"], letter[","]
    stored = {
        "space": "order shipped",
        "letter": f"order{space}shipped",
        "both": f"a b{space}c",
        "bang": "wow! great, thanks",
        "bang-letter": f"wow{bang} great{comma} thanks",
    }
    database = Database(database_url)
    with database.write_transaction() as conn:
        insert_messages_if_new(
            conn, [NewMessage(mid, "+1", "+2", "2025-01-01T00:00:00Z", t) for mid, t in stored.items()]
        )
    with database.read_transaction() as conn:
        for needle, found in [
            ("order shipped", ["space"]),
            (f"order{space}shipped", ["letter"]),
            ("r s", ["space"]),
            (f"b{space}c", ["both"]),
            ("a b", ["both"]),
            (f"a{space}b", []),
            ("b c", []),
            ("wow! ", ["bang"]),
            ("! g", ["bang"]),
            (f"w{bang} g", ["bang-letter"]),
            ("t, t", ["bang"]),
            (f"t{comma} t", ["bang-letter"]),
            ("wow", ["bang", "bang-letter"]),
            ("!", ["bang"]),
            (bang, ["bang-letter"]),
            ("w!g", []),
        ]:
            page = list_messages(conn, MessageFilter(text_contains=needle), 50)
            assert sorted(item.message_id for item in page.items) == found and page.total == len(found), needle
    database.dispose()


def _seeded_with(url: str, prefix: str, texts: list[str]) -> Database:
    """A database of 50,000 seeded messages (enough that the planner reads an index) and
    `texts` (ids `prefix` + their place), counts folded and statistics taken."""
    from webhook_service.storage.messages import NewMessage, insert_messages_if_new

    _seed(url, 50_000)
    database = Database(url)
    with database.write_transaction() as conn:
        insert_messages_if_new(
            conn, [NewMessage(f"{prefix}{n}", "+1", "+2", "2025-01-01T00:00:00Z", t) for n, t in enumerate(texts)]
        )
    fold_counts(url)
    with database.read_transaction() as conn:
        conn.exec_driver_sql("ANALYZE messages")
    return database


def _rows_read_from_messages(plans: list[str]) -> int:
    """The most rows any step of the plans (EXPLAIN ANALYZE) read from messages or its indexes."""
    return max(
        (int(n) for plan in plans for n in re.findall(r" on (?:messages|ix_messages_\w+) .*?rows=(\d+) loops", plan)),
        default=0,
    )


@pytest.mark.postgresql_only
def test_a_phrase_of_common_words_is_narrowed_by_the_trigrams_across_its_spaces(database_url):
    """pg_trgm takes trigrams within words: `alpha beta` alone would be narrowed to every text
    holding both words. Across the space, only the texts holding the phrase are read."""
    texts = [f"alpha {n} beta" for n in range(3000)] + [f"alpha beta {n}" for n in range(4)]
    database = _seeded_with(database_url, "m", texts)
    try:
        page, plans = _read_and_its_plans(database, MessageFilter(text_contains="alpha beta"), analyze=True)
        assert page.total == 4 and len(page.items) == 4
        read = [
            int(n)
            for plan in plans
            for n in re.findall(r"Bitmap Index Scan on ix_messages_text_\w+ .*?rows=(\d+) loops", plan)
        ]
        assert read and max(read) < 100, plans
    finally:
        database.dispose()


@pytest.mark.postgresql_only
def test_needles_with_marks_are_narrowed_by_the_trigrams_across_them(database_url):
    """pg_trgm takes no trigram from a mark: `wren!` would be narrowed to every text holding
    `wren`, and `! ` (no letter) found by testing every text. With the marks as letters, both
    read only the texts that hold them."""
    texts = [f"wren {n}" for n in range(3000)] + ["wren! one", "hi! two", "wren!"]
    database = _seeded_with(database_url, "k", texts)
    try:
        for needle, found in [("WREN!", ["k3000", "k3002"]), ("! ", ["k3000", "k3001"])]:
            page, plans = _read_and_its_plans(database, MessageFilter(text_contains=needle), analyze=True)
            assert sorted(item.message_id for item in page.items) == found and page.total == len(found), needle
            assert not any("Seq Scan on messages" in plan for plan in plans), plans
            assert _rows_read_from_messages(plans) < 100, plans
    finally:
        database.dispose()


@pytest.mark.postgresql_only
def test_a_needle_of_four_characters_every_text_holds_is_counted_without_reading_the_texts(database_url):
    """The trigram index holds no positions: counting a common four-character needle would
    test every text holding its trigrams. Its count is kept with the writes instead."""

    _seed(database_url, 50_000)  # every text is "text " + md5(i)
    database = Database(database_url)
    try:
        fold_counts(database_url)
        page, plans = _read_and_its_plans(database, MessageFilter(text_contains="EXT "), analyze=True)
        assert page.total == 50_000 and len(page.items) == 50
        assert _rows_read_from_messages(plans) < 1_000, plans
    finally:
        database.dispose()


@pytest.mark.postgresql_only
def test_a_needle_longer_than_nearly_every_text_reads_only_the_texts_long_enough_to_hold_it(database_url):
    """`you you you ...` has the trigrams of its first words, which thousands of short texts
    hold; no text shorter than the needle can hold it, and the text length index finds the few
    long enough."""
    needle = ("you " * 12)[:47]
    # Beside the seeded texts of 37 characters.
    database = _seeded_with(database_url, "y", ["you you you, you"] * 3000 + [f"so {needle} so", needle[:-1]])
    try:
        page, plans = _read_and_its_plans(database, MessageFilter(text_contains=needle), analyze=True)
        assert [item.message_id for item in page.items] == ["y3000"] and page.total == 1
        assert _rows_read_from_messages(plans) < 100, plans
    finally:
        database.dispose()


def _counted_rows(plans: list[str]) -> int:
    """The most rows a count statement of the plans read from messages or its indexes."""
    return _rows_read_from_messages([plan for plan in plans if "Aggregate" in plan])


def _total_of(database: Database, needle: str) -> int:
    with database.read_transaction() as conn:
        return list_messages(conn, MessageFilter(text_contains=needle), 1).total


@pytest.mark.postgresql_only
def test_the_total_of_a_needle_many_texts_hold_is_counted_once_then_only_newer_messages_are_tested(database_url):
    """PostgreSQL tests every text that may hold `gamma delta` to count them; a reader paging
    through them asks again at every page. The total is remembered, and a later read tests
    only the messages stored since."""
    from webhook_service.storage.messages import NewMessage, insert_messages_if_new

    database = _seeded_with(database_url, "g", [f"alpha gamma delta {n}" for n in range(3000)] + ["gamma, delta"])
    try:
        needle = MessageFilter(text_contains="gamma delta")
        page, plans = _read_and_its_plans(database, needle, analyze=True)
        assert page.total == 3000 and _counted_rows(plans) >= 3000, plans
        page, plans = _read_and_its_plans(database, needle, analyze=True)
        assert page.total == 3000 and _counted_rows(plans) < 100, plans
        with database.write_transaction() as conn:
            insert_messages_if_new(
                conn,
                [
                    NewMessage("new-1", "+1", "+2", "2025-02-01T00:00:00Z", "gamma delta"),
                    NewMessage("new-2", "+1", "+2", "2025-02-01T00:00:00Z", "GAMMA DELTA again"),
                    NewMessage("new-3", "+1", "+2", "2025-02-01T00:00:00Z", "gamma  delta"),
                ],
            )
        page, plans = _read_and_its_plans(database, needle, analyze=True)
        assert page.total == 3002 and _counted_rows(plans) < 100, plans
    finally:
        database.dispose()


@pytest.mark.postgresql_only
def test_a_remembered_total_is_not_used_after_messages_are_deleted_even_by_a_delete_that_raced_its_count(
    database_url,
):
    database = _seeded_with(database_url, "g", [f"alpha gamma delta {n}" for n in range(3000)])
    try:
        assert _total_of(database, "gamma delta") == 3000  # remembered
        with database.write_transaction() as conn:
            assert delete_counted(conn, messages.c.message_id.in_(["g0", "g1"])) == 2
        assert _total_of(database, "gamma delta") == 2998
        # Counted in a snapshot taken before a delete that commits before the total is
        # written: the total is written, and not used.
        run_sql(database_url, "DELETE FROM text_totals")
        with database.read_transaction() as conn:
            assert list_messages(conn, MessageFilter(text_contains="gamma delta"), 1).total == 2998
            with database.write_transaction() as deleting:
                assert delete_counted(deleting, messages.c.message_id.in_(["g2", "g3", "g4"])) == 3
        assert run_sql(database_url, "SELECT total FROM text_totals") == [(2998,)]
        assert _total_of(database, "gamma delta") == 2995
        # Folding the deletes' changes in changes nothing a reader sees: still remembered.
        fold_counts(database_url)
        page, plans = _read_and_its_plans(database, MessageFilter(text_contains="gamma delta"), analyze=True)
        assert page.total == 2995 and _counted_rows(plans) < 100, plans
    finally:
        database.dispose()


@pytest.mark.postgresql_only
def test_a_total_that_cannot_be_remembered_is_still_answered(database_url, monkeypatch, log_lines):
    from sqlalchemy.exc import OperationalError

    from webhook_service.observability.logging import configure_logging
    from webhook_service.storage.read_model import text_totals as remembering

    configure_logging("INFO")

    def refused(conn, counted):
        raise OperationalError(
            "INSERT INTO text_totals", {}, Exception("cannot execute INSERT in a read-only transaction")
        )

    database = _seeded_with(database_url, "g", [f"alpha gamma delta {n}" for n in range(3000)])
    try:
        monkeypatch.setattr(remembering, "_remember", refused)
        assert _total_of(database, "gamma delta") == 3000
        monkeypatch.undo()
        assert run_sql(database_url, "SELECT count(*) FROM text_totals") == [(0,)]
        assert any(line.get("event") == "what a read left to write was not written" for line in log_lines())
        assert "gamma" not in log_lines.raw()
        assert _total_of(database, "gamma delta") == 3000
        assert run_sql(database_url, "SELECT total FROM text_totals") == [(3000,)]
    finally:
        database.dispose()


@pytest.mark.postgresql_only
def test_a_needle_too_long_to_be_a_key_is_counted_and_not_remembered(database_url, log_lines):
    from webhook_service.observability.logging import configure_logging
    from webhook_service.storage.dialects.postgresql import text_holds
    from webhook_service.storage.read_model.text_totals import count_holding

    configure_logging("INFO")
    # 1,000 characters that do not repeat, 3,000 bytes: more than a B-tree entry holds.
    needle = "".join(chr(0x4E00 + number * 7919 % 20000) for number in range(1000))
    database = _seeded_with(database_url, "e", [needle, f"{needle}!", needle[1:]])
    try:
        with database.read_transaction() as conn:
            assert count_holding(conn, needle, [text_holds(needle)]) == 2
        assert run_sql(database_url, "SELECT count(*) FROM text_totals") == [(0,)]
        assert not any(line.get("event") == "what a read left to write was not written" for line in log_lines())
    finally:
        database.dispose()


@pytest.mark.postgresql_only
def test_a_remembered_total_counts_the_messages_a_transaction_still_running_held_back(database_url):
    """Messages committed above the feed's horizon (an older transaction still runs) are in
    the count but not in the remembered part: a later read adds them once, as newer ones."""
    from webhook_service.storage.messages import NewMessage, insert_messages_if_new

    database = _seeded_with(database_url, "g", [f"alpha gamma delta {n}" for n in range(3000)])
    try:
        with database.write_transaction() as holding:
            holding.execute(text("SELECT pg_current_xact_id()"))
            with database.write_transaction() as conn:
                insert_messages_if_new(
                    conn, [NewMessage(f"late-{n}", "+1", "+2", "2025-02-01T00:00:00Z", "gamma delta") for n in range(5)]
                )
            assert _total_of(database, "gamma delta") == 3005
        assert _total_of(database, "gamma delta") == 3005
        assert run_sql(database_url, "SELECT total FROM text_totals") == [(3000,)]  # the part below the horizon
    finally:
        database.dispose()


@pytest.mark.postgresql_only
def test_a_read_past_its_budget_on_postgresql_answers_422(make_app, database_url, log_lines):
    from webhook_service.api.context import DATABASE_KEY

    _seed(database_url, 50_000)
    app = make_app(Settings(webhook_secrets=("s",), database_url=database_url, query_budget_ms=10))
    client = app.test_client()
    # Every text holds the needle and is after `since`: all 50,000 are read to count them.
    response = client.get("/messages?q=text&since=2024-01-01T00:00:00Z")
    assert response.status_code == 422, response.get_json()
    [error] = response.get_json()["detail"]
    assert error["type"] == "query_too_expensive" and "10 ms" in error["msg"]
    assert any(line.get("event") == "read stopped at its time budget" for line in log_lines())
    # The connection goes back to the pool without the budget: the next read (one at a time,
    # so on the same pooled connection) has the serving timeout again and counts everything.
    database = app.extensions[DATABASE_KEY]
    with database.read_transaction() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "25s"
        assert list_messages(conn, MessageFilter(), 1).total == 50_000


@pytest.mark.postgresql_only
def test_an_unreachable_server_fails_the_start_in_one_line(postgres_cluster):
    from tests.support.servers import free_port

    url = f"postgresql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(MigrationFailed) as failed:
        migrate(url)
    message = str(failed.value)
    assert message.startswith("database migration failed: OperationalError: connection")
    assert "\n" not in message and APP_PASSWORD not in message
