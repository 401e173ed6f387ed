from tests.support.messages import make_message


def test_stats_on_an_empty_database(client):
    response = client.get("/stats")
    assert response.status_code == 200
    assert response.get_json() == {
        "total_messages": 0,
        "senders_count": 0,
        "messages_per_sender": [],
        "first_message_ts": None,
        "last_message_ts": None,
    }


def test_stats_on_a_busy_database(client, signed_post):
    # Sender +1NN sends NN % 4 + 1 messages: counts tie, so the sender order decides.
    number = 0
    for sender in range(100, 115):
        for _ in range(sender % 4 + 1):
            number += 1
            ts = f"2024-03-{(number % 28) + 1:02d}T12:00:00.{number:03d}Z"
            assert (
                signed_post(make_message(message_id=f"m{number}", ts=ts, **{"from": f"+{sender}"})).status_code == 200
            )
    signed_post(make_message(message_id="early", ts="2024-02-29T23:59:59.9Z", **{"from": "+100"}))
    signed_post(make_message(message_id="late", ts="2024-03-31T00:00:00Z", **{"from": "+100"}))

    body = client.get("/stats").get_json()
    assert body["total_messages"] == number + 2
    assert body["senders_count"] == 15
    assert body["messages_per_sender"] == [
        {"from": "+103", "count": 4},
        {"from": "+107", "count": 4},
        {"from": "+111", "count": 4},
        {"from": "+100", "count": 3},
        {"from": "+102", "count": 3},
        {"from": "+106", "count": 3},
        {"from": "+110", "count": 3},
        {"from": "+114", "count": 3},
        {"from": "+101", "count": 2},
        {"from": "+105", "count": 2},
    ]
    assert body["first_message_ts"] == "2024-02-29T23:59:59.9Z"
    assert body["last_message_ts"] == "2024-03-31T00:00:00Z"


def test_first_and_last_are_by_instant_and_as_written(client, signed_post):
    # As text "...00.001Z" sorts before "...00Z"; as instants it is later.
    signed_post(make_message(message_id="later", ts="2024-01-01T00:00:00.001Z"))
    signed_post(make_message(message_id="earlier", ts="2024-01-01T00:00:00Z"))
    body = client.get("/stats").get_json()
    assert body["first_message_ts"] == "2024-01-01T00:00:00Z"
    assert body["last_message_ts"] == "2024-01-01T00:00:00.001Z"
