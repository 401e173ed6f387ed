import pytest

from tests.support.messages import make_message


@pytest.fixture
def seeded(signed_post):
    """Five messages from two senders at mixed ts precision, posted out of order."""
    payloads = [
        make_message(message_id="c", **{"from": "+111"}, ts="2024-01-01T00:00:01Z", text="Grüße aus KÖLN"),
        make_message(message_id="a", **{"from": "+222"}, ts="2024-01-01T00:00:00.500Z", text="100% sure_thing"),
        make_message(message_id="b", **{"from": "+111"}, ts="2024-01-01T00:00:00.5Z", text=None),
        make_message(message_id="d", **{"from": "+111"}, ts="2024-01-01T00:00:00Z", text="Äpfel und Birnen"),
        make_message(message_id="e", **{"from": "+222"}, ts="2023-12-31T23:59:59.999999999Z", text="back\\slash"),
    ]
    for payload in payloads:
        assert signed_post(payload).status_code == 200
    return payloads


def ids(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [item["message_id"] for item in response.get_json()["data"]]


def test_empty_database_gives_an_empty_page(client):
    response = client.get("/messages")
    assert response.status_code == 200
    assert response.get_json() == {"data": [], "total": 0, "limit": 50, "offset": 0, "next_cursor": None}


def test_items_carry_every_field_with_ts_as_sent(client, seeded):
    body = client.get("/messages?limit=1").get_json()
    assert body["total"] == 5
    [item] = body["data"]
    assert set(item) == {"message_id", "from", "to", "ts", "text", "created_at"}
    assert item["ts"] == "2023-12-31T23:59:59.999999999Z"
    assert item["created_at"].endswith("Z") and len(item["created_at"]) == len("2024-01-01T00:00:00.000000Z")


def test_order_is_by_instant_then_message_id_across_precisions(client, seeded):
    # a (…00.500Z) and b (…00.5Z) are the same instant: message_id decides.
    assert ids(client.get("/messages")) == ["e", "d", "a", "b", "c"]


def test_pagination_splits_the_same_order(client, seeded):
    first = client.get("/messages?limit=2&offset=0").get_json()
    second = client.get("/messages?limit=2&offset=2").get_json()
    third = client.get("/messages?limit=2&offset=4").get_json()
    assert [m["message_id"] for page in (first, second, third) for m in page["data"]] == ["e", "d", "a", "b", "c"]
    assert (first["total"], first["limit"], first["offset"]) == (5, 2, 0)
    assert third["total"] == 5 and len(third["data"]) == 1
    assert client.get("/messages?offset=10").get_json() == {
        "data": [],
        "total": 5,
        "limit": 50,
        "offset": 10,
        "next_cursor": None,
    }


def test_from_filter_is_an_exact_match(client, seeded):
    assert ids(client.get("/messages?from=%2B111")) == ["d", "b", "c"]
    assert ids(client.get("/messages?from=%2B11")) == []


def test_unencoded_plus_in_from_is_understood(client, seeded):
    # `?from=+111` as curl sends it unencoded: the server decodes the + to a space.
    assert ids(client.get("/messages?from=+111")) == ["d", "b", "c"]
    assert ids(client.get("/messages?from=%20111")) == ["d", "b", "c"]


def test_since_is_inclusive_and_compares_instants(client, seeded):
    assert ids(client.get("/messages?since=2024-01-01T00:00:00.5Z")) == ["a", "b", "c"]
    assert ids(client.get("/messages?since=2024-01-01T00:00:00.500000000Z")) == ["a", "b", "c"]
    assert ids(client.get("/messages?since=2024-01-01T00:00:00.5000001Z")) == ["c"]
    assert client.get("/messages?since=2024-01-01T00:00:00.5Z").get_json()["total"] == 3


def test_q_is_case_insensitive_across_unicode(client, seeded):
    assert ids(client.get("/messages?q=äpfel")) == ["d"]
    assert ids(client.get("/messages?q=ÄPFEL")) == ["d"]
    assert ids(client.get("/messages?q=köln")) == ["c"]
    # Full Unicode case folding: ß folds to ss, as in German capitalisation (GRÜSSE).
    assert ids(client.get("/messages?q=GRÜSSE")) == ["c"]
    assert ids(client.get("/messages?q=Ö")) == ["c"]


def test_q_treats_percent_underscore_and_backslash_literally(client, seeded):
    assert ids(client.get("/messages?q=%25")) == ["a"]
    assert ids(client.get("/messages?q=0%25 s")) == ["a"]
    assert ids(client.get("/messages?q=_")) == ["a"]
    # As LIKE patterns these would match "100% sure_thing"; as literal text they do not.
    assert ids(client.get("/messages?q=r_")) == []
    assert ids(client.get("/messages?q=1%25s")) == []
    assert ids(client.get("/messages?q=e_th")) == ["a"]
    assert ids(client.get("/messages?q=%5C")) == ["e"]
    assert ids(client.get("/messages?q=k%5Cs")) == ["e"]


def test_q_with_search_syntax_is_a_plain_substring(client, signed_post):
    signed_post(make_message(message_id="x", text='say "AND" foo-bar NOT (x) * OR'))
    for needle in ['"AND"', "foo-bar", "NOT (x)", "* OR", 'y "a']:
        expected = ["x"] if needle.casefold() in 'say "and" foo-bar not (x) * or' else []
        assert ids(client.get("/messages", query_string={"q": needle})) == expected, needle


def test_messages_without_text_never_match_q(client, seeded):
    assert "b" not in ids(client.get("/messages?q=e"))


def test_filters_combine_with_and_and_total_counts_all_matches(client, seeded):
    body = client.get("/messages?from=%2B111&since=2024-01-01T00:00:00.5Z&q=k&limit=1").get_json()
    assert [m["message_id"] for m in body["data"]] == ["c"]
    assert body["total"] == 1
    body = client.get("/messages?from=%2B111&limit=1").get_json()
    assert body["total"] == 3 and len(body["data"]) == 1


@pytest.mark.parametrize(
    "query, field, error_type",
    [
        ("limit=0", "limit", "greater_than_equal"),
        ("limit=101", "limit", "less_than_equal"),
        ("limit=-1", "limit", "greater_than_equal"),
        ("limit=abc", "limit", "int_parsing"),
        ("limit=5.5", "limit", "int_parsing"),
        ("limit=", "limit", "int_parsing"),
        ("limit=1_0", "limit", "int_parsing"),
        ("limit=%D9%A5", "limit", "int_parsing"),
        ("offset=-1", "offset", "greater_than_equal"),
        ("offset=x", "offset", "int_parsing"),
        ("offset=99999999999999999999", "offset", "less_than_equal"),
        ("since=yesterday", "since", "value_error"),
        ("since=2024-02-30T00:00:00Z", "since", "value_error"),
        ("since=2024-01-01T00:00:00%2B00:00", "since", "value_error"),
        ("since=", "since", "value_error"),
        ("q=" + "a" * 4097, "q", "string_too_long"),
    ],
)
def test_bad_query_parameters_are_422_fastapi_style(client, query, field, error_type):
    response = client.get("/messages?" + query)
    assert response.status_code == 422
    [error] = response.get_json()["detail"]
    assert error["loc"] == ["query", field]
    assert error["type"] == error_type
    assert error["msg"]


def test_limit_bounds_are_accepted(client, seeded):
    assert len(ids(client.get("/messages?limit=1"))) == 1
    assert len(ids(client.get("/messages?limit=100"))) == 5


def test_empty_from_and_q_do_not_filter(client, seeded):
    assert len(ids(client.get("/messages?from=&q="))) == 5


def test_unknown_parameters_are_ignored(client, seeded):
    assert len(ids(client.get("/messages?page=3&sort=desc"))) == 5


def walk_with_cursors(client, query: str) -> list[str]:
    seen, path = [], f"/messages?{query}"
    for _ in range(100):
        body = client.get(path).get_json()
        seen += [item["message_id"] for item in body["data"]]
        if body["next_cursor"] is None:
            return seen
        path = f"/messages?{query}&cursor={body['next_cursor']}"
    raise AssertionError("the cursors never ended")


@pytest.mark.parametrize(
    "query", ["limit=1", "limit=2", "limit=2&from=%2B111", "limit=1&q=e", "limit=2&since=2024-01-01T00:00:00.5Z"]
)
def test_cursor_pages_walk_the_same_order_as_one_big_page(client, seeded, query):
    everything = ids(client.get(f"/messages?{query.replace('limit=1', 'limit=100').replace('limit=2', 'limit=100')}"))
    assert walk_with_cursors(client, query) == everything


def test_a_cursor_before_since_starts_at_since_and_one_after_it_continues_after_itself(client, seeded):
    # Order: e (2023), d (00:00:00), a and b (00:00:00.5), c (00:00:01).
    after_e = client.get("/messages?limit=1").get_json()["next_cursor"]
    after_a = client.get("/messages?limit=3").get_json()["next_cursor"]
    assert ids(client.get(f"/messages?since=2024-01-01T00:00:00.5Z&cursor={after_e}")) == ["a", "b", "c"]
    assert ids(client.get(f"/messages?since=2024-01-01T00:00:00Z&cursor={after_e}")) == ["d", "a", "b", "c"]
    assert ids(client.get(f"/messages?since=2024-01-01T00:00:00Z&cursor={after_a}")) == ["b", "c"]
    assert ids(client.get(f"/messages?since=2024-01-01T00:00:00.5Z&cursor={after_a}")) == ["b", "c"]
    assert ids(client.get(f"/messages?since=2024-01-01T00:00:01Z&cursor={after_a}&from=%2B111")) == ["c"]


def test_next_cursor_is_null_on_the_last_page_only(client, seeded):
    assert client.get("/messages?limit=5").get_json()["next_cursor"] is None
    assert client.get("/messages?limit=4").get_json()["next_cursor"] is not None
    assert client.get("/messages?limit=2&offset=3").get_json()["next_cursor"] is None
    middle = client.get("/messages?limit=2&offset=1").get_json()
    assert ids(client.get(f"/messages?limit=2&cursor={middle['next_cursor']}")) == ["b", "c"]


def test_a_cursor_page_keeps_its_place_when_earlier_messages_arrive(client, seeded, signed_post):
    first = client.get("/messages?limit=2").get_json()
    signed_post(make_message(message_id="0-early", ts="2020-01-01T00:00:00Z"))
    body = client.get(f"/messages?limit=2&cursor={first['next_cursor']}").get_json()
    assert [m["message_id"] for m in body["data"]] == ["a", "b"]
    assert body["total"] == 6 and body["offset"] == 0


@pytest.mark.parametrize("cursor", ["junk", "e30", "%00", "WzEsMl0"])
def test_a_malformed_cursor_is_422_naming_it(client, seeded, cursor):
    response = client.get(f"/messages?cursor={cursor}")
    assert response.status_code == 422
    [error] = response.get_json()["detail"]
    assert error["loc"] == ["query", "cursor"] and error["type"] == "value_error"


def test_offset_with_a_cursor_is_422(client, seeded):
    cursor = client.get("/messages?limit=1").get_json()["next_cursor"]
    response = client.get(f"/messages?cursor={cursor}&offset=2")
    assert response.status_code == 422
    assert response.get_json()["detail"][0]["loc"] == ["query", "offset"]
    assert client.get(f"/messages?cursor={cursor}&offset=0").status_code == 200


def test_nul_and_text_after_it_are_searchable(client, signed_post):
    signed_post(make_message(message_id="nul", text="before\x00after the NUL"))
    signed_post(make_message(message_id="plain", text="nothing here"))
    assert ids(client.get("/messages?q=after%20the")) == ["nul"]
    assert ids(client.get("/messages?q=e%00a")) == ["nul"]
    assert ids(client.get("/messages?q=%00")) == ["nul"]


def test_a_nul_and_the_symbol_for_nul_are_different_characters(client, signed_post):
    signed_post(make_message(message_id="nul", text="a\x00b"))
    signed_post(make_message(message_id="symbol", text="a\u2400b"))
    signed_post(make_message(message_id="circled", text="a\u24b6b \u24d0"))
    assert ids(client.get("/messages", query_string={"q": "\x00"})) == ["nul"]
    assert ids(client.get("/messages", query_string={"q": "a\x00b"})) == ["nul"]
    assert ids(client.get("/messages", query_string={"q": "\u2400"})) == ["symbol"]
    # U+24B6 folds to U+24D0 like any capital: it finds itself in either case, never a NUL.
    assert ids(client.get("/messages", query_string={"q": "\u24b6"})) == ["circled"]
    assert ids(client.get("/messages", query_string={"q": "a\u24d0b"})) == ["circled"]


SEARCH_TEXTS = ["Your OTP is 1234", "otp again", "Grüße", "100% sure_thing", "back\\slash", 'a"quote"', None, "xyz"]


@pytest.mark.parametrize("common_threshold", [0, 20_000], ids=["read-in-order", "narrowed-by-trigrams"])
@pytest.mark.parametrize(
    "needle, expected",
    [
        ("otp", ["s0", "s1"]),
        ("OTP IS", ["s0"]),
        ("GRÜSSE", ["s2"]),
        ("0% s", ["s3"]),
        ("_th", ["s3"]),
        ("k\\s", ["s4"]),
        ('"quote"', ["s5"]),
        ("zzz", []),
        ("otp is 12345", []),
        ("xy", ["s7"]),
        ("%", ["s3"]),
        ("\\", ["s4"]),
        ("q", ["s5"]),
        ("T", ["s0", "s1", "s3", "s5"]),
        ("_", ["s3"]),
        ("ss", ["s2"]),
        ("qx", []),
    ],
)
def test_both_search_plans_find_exactly_the_texts_holding_the_needle(
    client, signed_post, monkeypatch, common_threshold, needle, expected
):
    from webhook_service.storage.dialects import search

    monkeypatch.setattr(search, "COMMON_NEEDLE_TEXTS", common_threshold)
    for number, text in enumerate(SEARCH_TEXTS):
        signed_post(make_message(message_id=f"s{number}", text=text))
    body = client.get("/messages", query_string={"q": needle}).get_json()
    assert [item["message_id"] for item in body["data"]] == expected
    assert body["total"] == len(expected)


@pytest.mark.parametrize("holding", [3, 150, 300], ids=["few-sorted", "many-walked", "too-many-to-collect"])
def test_a_longer_needle_alone_finds_its_pages_and_total_however_many_texts_hold_it(database_url, holding):
    """Of 400 messages, a phrase in 3 texts (its matches collected and sorted), in 150 (collected,
    then found in page order), in 300 (more than are collected: LIKE in page order). Every page
    and total is what testing every text finds, alone and under from and since."""
    from webhook_service.storage.engine import Database
    from webhook_service.storage.messages import MessageFilter, NewMessage, insert_messages_if_new, list_messages

    texts = ["your order shipped today" if number % 400 < holding else "see you at lunch" for number in range(400)]
    stored = [
        NewMessage(f"m{number:03d}", f"+1{number % 3}", "+2", f"2025-01-{1 + number % 28:02d}T00:00:00Z", text)
        for number, text in zip(range(0, 400 * 7, 7), texts, strict=True)
    ]
    database = Database(database_url)
    try:
        with database.write_transaction() as conn:
            insert_messages_if_new(conn, stored)
        with database.read_transaction() as conn:
            everything = list_messages(conn, MessageFilter(), 400).items
            for message_filter in (
                MessageFilter(text_contains="ORDER SHIPPED"),
                MessageFilter(text_contains="order shipped", sender="+11"),
                MessageFilter(text_contains="order shipped", since="2025-01-20T00:00:00Z"),
            ):
                expected = [
                    item.message_id
                    for item in everything
                    if "order shipped" in (item.text or "")
                    and message_filter.sender in (None, item.sender)
                    and (message_filter.since is None or item.ts >= message_filter.since)
                ]
                found, offset = [], 0
                while True:
                    page = list_messages(conn, message_filter, 50, offset)
                    assert page.total == len(expected), message_filter
                    found += [item.message_id for item in page.items]
                    offset += 50
                    if offset >= page.total:
                        break
                assert found == expected, message_filter
    finally:
        database.dispose()
