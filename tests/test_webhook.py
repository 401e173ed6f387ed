import json

import pytest

from tests.support.messages import SECRET, make_message
from webhook_service.config import Settings
from webhook_service.signatures import sign_legacy


def test_valid_signed_message_is_stored(signed_post, stored_messages):
    response = signed_post(make_message(text="Hello there"))
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    [row] = stored_messages()
    assert (row["message_id"], row["from_msisdn"], row["to_msisdn"], row["ts"], row["text"]) == (
        "m1",
        "+919876543210",
        "+14155550100",
        "2025-01-15T10:00:00Z",
        "Hello there",
    )


def test_duplicate_answers_ok_and_first_write_wins(signed_post, stored_messages):
    assert signed_post(make_message(text="first")).status_code == 200
    second = signed_post(make_message(text="second", to="+10000000000"))
    assert second.status_code == 200
    assert second.get_json() == {"status": "ok"}
    [row] = stored_messages()
    assert row["text"] == "first"
    assert row["to_msisdn"] == "+14155550100"


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Signature": "0" * 64}, {"X-Signature": "not hex"}, {"X-Signature": sign_legacy("wrong", b"{}")}],
)
def test_missing_or_wrong_signature_is_401_and_stores_nothing(client, stored_messages, headers):
    response = client.post("/webhook", data=json.dumps(make_message()), headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"detail": "invalid signature"}
    assert stored_messages() == []


def test_signature_is_checked_before_parsing(client):
    # Garbage that is not JSON still gets 401, not 422, when unsigned.
    response = client.post("/webhook", data=b"\xff not json", headers={"X-Signature": "00" * 32})
    assert response.status_code == 401


def test_signature_over_other_bytes_than_sent_is_rejected(client):
    payload = make_message()
    signature = sign_legacy(SECRET, json.dumps(payload, indent=2).encode())
    response = client.post("/webhook", data=json.dumps(payload), headers={"X-Signature": signature})
    assert response.status_code == 401


def test_uppercase_and_prefixed_signatures_are_accepted(client, stored_messages):
    body = json.dumps(make_message()).encode()
    response = client.post(
        "/webhook", data=body, headers={"X-Signature": "sha256=" + sign_legacy(SECRET, body).upper()}
    )
    assert response.status_code == 200
    assert len(stored_messages()) == 1


def test_without_a_secret_ingestion_refuses_with_503(make_app, database_url, stored_messages):
    client = make_app(Settings(webhook_secrets=(), database_url=database_url)).test_client()
    body = json.dumps(make_message()).encode()
    response = client.post("/webhook", data=body, headers={"X-Signature": sign_legacy("", body)})
    assert response.status_code == 503
    assert "detail" in response.get_json()
    assert stored_messages() == []


def test_body_over_the_limit_is_413(signed_post, stored_messages):
    response = signed_post(make_message(text="x" * 70_000))
    assert response.status_code == 413
    assert "detail" in response.get_json()
    assert stored_messages() == []


def test_body_limit_is_configurable(make_app, database_url, stored_messages):
    client = make_app(Settings(webhook_secrets=(SECRET,), database_url=database_url, max_body_bytes=200)).test_client()
    body = json.dumps(make_message(text="y" * 300)).encode()
    response = client.post("/webhook", data=body, headers={"X-Signature": sign_legacy(SECRET, body)})
    assert response.status_code == 413
    assert stored_messages() == []


def test_json_is_parsed_whatever_the_content_type(signed_post, stored_messages):
    response = signed_post(make_message(), headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    assert len(stored_messages()) == 1


@pytest.mark.parametrize(
    "body, error_type",
    [
        (b"not json", "json_invalid"),
        (b'{"message_id": "m1",', "json_invalid"),
        (b"\xff\xfe{}", "json_invalid"),
        ('{"message_id": "caf\u00e9"}'.encode("latin-1"), "json_invalid"),
        (b"[1, 2]", "model_attributes_type"),
        (b'"a string"', "model_attributes_type"),
        (b"null", "model_attributes_type"),
        (b"[" * 30_000 + b"]" * 30_000, "json_invalid"),
        (b'{"message_id": ' + b"1" * 5000 + b"}", "json_invalid"),
        (b"", "json_invalid"),
    ],
)
def test_bodies_that_are_not_a_utf8_json_object_are_422(signed_post, stored_messages, body, error_type):
    response = signed_post(body=body)
    assert response.status_code == 422
    [error] = response.get_json()["detail"]
    assert error["type"] == error_type
    assert error["loc"][0] == "body"
    assert stored_messages() == []


def field_errors(response) -> dict:
    assert response.status_code == 422
    return {tuple(error["loc"]): error for error in response.get_json()["detail"]}


@pytest.mark.parametrize("field", ["message_id", "from", "to", "ts"])
def test_required_fields_are_reported_fastapi_style(signed_post, field):
    payload = make_message()
    del payload[field]
    errors = field_errors(signed_post(payload))
    assert errors[("body", field)]["type"] == "missing"
    assert errors[("body", field)]["msg"] == "Field required"


@pytest.mark.parametrize(
    "number", ["9876543210", "+", "+1234567890123456", "+12 34", "++123", "+12a4", "+١٢٣", "+123\n"]
)
def test_from_and_to_must_be_e164(signed_post, stored_messages, number):
    errors = field_errors(signed_post(make_message(**{"from": number, "to": number})))
    assert set(errors) == {("body", "from"), ("body", "to")}
    assert stored_messages() == []


@pytest.mark.parametrize("number", ["+1", "+0987654321", "+123456789012345"])
def test_e164_bounds_are_accepted(signed_post, number):
    assert signed_post(make_message(**{"from": number})).status_code == 200


@pytest.mark.parametrize(
    "ts",
    ["2024-02-30T00:00:00Z", "2024-01-15T10:30:00+00:00", "2024-01-15T10:30:00", "15/01/2024", "2024-01-15T25:00:00Z"],
)
def test_ts_must_be_a_real_utc_instant_with_z(signed_post, stored_messages, ts):
    errors = field_errors(signed_post(make_message(ts=ts)))
    assert set(errors) == {("body", "ts")}
    assert stored_messages() == []


@pytest.mark.parametrize("ts", ["2024-02-29T00:00:00Z", "2024-01-15T10:30:00.1Z", "2024-01-15T10:30:00.123456789Z"])
def test_ts_fractions_of_1_to_9_digits_are_accepted(signed_post, ts):
    assert signed_post(make_message(ts=ts)).status_code == 200


@pytest.mark.parametrize("message_id", ["", "   ", "\t\n"])
def test_message_id_needs_a_non_space_character(signed_post, message_id):
    assert ("body", "message_id") in field_errors(signed_post(make_message(message_id=message_id)))


def test_text_length_counts_characters_not_bytes(signed_post, stored_messages):
    # 4096 two-byte characters: 8192 bytes, still within the limit of 4096 characters.
    assert signed_post(make_message(message_id="a", text="é" * 4096)).status_code == 200
    errors = field_errors(signed_post(make_message(message_id="b", text="é" * 4097)))
    assert errors[("body", "text")]["type"] == "string_too_long"
    assert [row["message_id"] for row in stored_messages()] == ["a"]


@pytest.mark.parametrize("text", [None, ""])
def test_text_may_be_null_or_empty(signed_post, stored_messages, text):
    assert signed_post(make_message(text=text)).status_code == 200
    assert stored_messages()[0]["text"] == text


def test_text_may_be_absent(signed_post, stored_messages):
    payload = make_message()
    del payload["text"]
    assert signed_post(payload).status_code == 200
    assert stored_messages()[0]["text"] is None


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"from": 919876543210}, "from"),
        ({"to": ["+1"]}, "to"),
        ({"text": {"body": "hi"}}, "text"),
        ({"text": 5}, "text"),
        ({"message_id": 123}, "message_id"),
        ({"message_id": None}, "message_id"),
        ({"ts": 1700000000}, "ts"),
        ({"from": True}, "from"),
    ],
)
def test_wrong_json_types_are_validation_errors(signed_post, stored_messages, overrides, field):
    errors = field_errors(signed_post(make_message(**overrides)))
    assert errors[("body", field)]["type"] == "string_type"
    assert stored_messages() == []


def test_every_bad_field_is_reported_at_once(signed_post):
    errors = field_errors(signed_post({"message_id": "", "from": "x", "to": "y", "ts": "z", "text": 1}))
    assert set(errors) == {("body", name) for name in ("message_id", "from", "to", "ts", "text")}


def test_unknown_fields_are_ignored(signed_post, stored_messages):
    assert signed_post(make_message(priority="high", meta={"a": 1})).status_code == 200
    assert len(stored_messages()) == 1


@pytest.mark.sqlite_only
def test_database_failure_is_503_and_acknowledges_nothing(signed_post, settings, stored_messages):
    import sqlite3

    path = settings.database_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        # A short busy timeout keeps the test quick; the production timeout is 5 s.
        from webhook_service.storage.dialects import sqlite as sqlite_dialect

        original = sqlite_dialect.LOCK_WAIT_MS
        sqlite_dialect.LOCK_WAIT_MS = 50
        try:
            response = signed_post(make_message())
        finally:
            sqlite_dialect.LOCK_WAIT_MS = original
    finally:
        blocker.rollback()
        blocker.close()
    assert response.status_code == 503
    assert "detail" in response.get_json()
    assert stored_messages() == []
    # The sender's retry then succeeds.
    assert signed_post(make_message()).status_code == 200
    assert len(stored_messages()) == 1


@pytest.mark.parametrize("field", ["message_id", "text"])
def test_lone_surrogates_are_rejected_not_stored(signed_post, stored_messages, field):
    body = json.dumps(make_message()).replace('"m1"' if field == "message_id" else '"Hello"', '"a\\ud800b"')
    errors = field_errors(signed_post(body=body.encode()))
    assert errors[("body", field)]["type"] == "value_error"
    assert stored_messages() == []


def test_database_folder_unusable_is_503_for_every_endpoint(make_app, tmp_path):
    # The database's folder is a file: neither the database nor its lock file can be opened.
    (tmp_path / "not-a-folder").write_text("x")
    url = f"sqlite:///{tmp_path / 'not-a-folder' / 'messages.db'}"
    client = make_app(Settings(webhook_secrets=(SECRET,), database_url=url)).test_client()
    body = json.dumps(make_message()).encode()
    response = client.post("/webhook", data=body, headers={"X-Signature": sign_legacy(SECRET, body)})
    assert response.status_code == 503 and "detail" in response.get_json()
    for path in ("/messages", "/stats", "/health/ready"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "Traceback" not in response.get_data(as_text=True)


def test_message_id_is_at_most_256_characters(signed_post, stored_messages):
    assert signed_post(make_message(message_id="i" * 256)).status_code == 200
    errors = field_errors(signed_post(make_message(message_id="j" * 257)))
    assert errors[("body", "message_id")]["type"] == "string_too_long"
    assert [row["message_id"] for row in stored_messages()] == ["i" * 256]


def test_an_unsigned_oversized_body_is_413_not_401(client, stored_messages):
    response = client.post("/webhook", data=b"x" * 70_000)
    assert response.status_code == 413 and "detail" in response.get_json()


@pytest.mark.parametrize("extra, status", [(0, 200), (1, 413)])
def test_the_body_limit_is_exact(make_app, database_url, extra, status):
    client = make_app(Settings(webhook_secrets=(SECRET,), database_url=database_url, max_body_bytes=300)).test_client()
    body = json.dumps(make_message(text="")).encode()
    body = body[:-1] + b" " * (300 - len(body) + extra) + b"}"
    assert len(body) == 300 + extra
    assert client.post("/webhook", data=body, headers={"X-Signature": sign_legacy(SECRET, body)}).status_code == status


def test_options_answers_json_with_the_allowed_methods(client):
    response = client.open("/webhook", method="OPTIONS")
    assert response.status_code == 200
    assert response.get_json() == {"allow": ["OPTIONS", "POST"]}
    assert set(response.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert client.get("/static/app.js").status_code == 404
