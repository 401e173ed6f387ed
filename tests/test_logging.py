import json
import logging

import pytest
from flask import Blueprint

from tests.support.logs import request_lines
from tests.support.messages import SECRET, make_message
from webhook_service.config import Settings
from webhook_service.signatures import sign_legacy


def test_one_line_per_request_with_the_documented_fields(client, log_lines):
    client.get("/messages?limit=5")
    [line] = request_lines(log_lines())
    assert line["level"] == "INFO"
    assert line["method"] == "GET" and line["path"] == "/messages" and line["status"] == 200
    assert isinstance(line["latency_ms"], float)
    assert line["ts"].endswith("Z") and "T" in line["ts"]
    assert line["request_id"]
    assert line["client"] == "127.0.0.1"
    assert "result" not in line


def test_webhook_lines_carry_message_id_dup_and_result(signed_post, client, log_lines):
    signed_post(make_message(message_id="abc"))
    signed_post(make_message(message_id="abc"))
    signed_post(make_message(message_id="bad", ts="yesterday"))
    client.post("/webhook", data=b"{}", headers={"X-Signature": "0" * 64})
    first, second, invalid, unsigned = request_lines(log_lines())
    assert (first["message_id"], first["dup"], first["result"]) == ("abc", False, "success")
    assert (second["message_id"], second["dup"], second["result"]) == ("abc", True, "duplicate")
    assert (invalid["message_id"], invalid["result"], invalid["status"]) == ("bad", "validation_error", 422)
    assert (unsigned["result"], unsigned["status"], unsigned["level"]) == ("invalid_signature", 401, "WARNING")
    assert "message_id" not in unsigned


def test_secret_signature_and_text_are_never_logged(signed_post, client, log_lines):
    text = "very private words"
    body = json.dumps(make_message(text=text)).encode()
    signature = sign_legacy(SECRET, body)
    client.post("/webhook", data=body, headers={"X-Signature": signature})
    client.post("/webhook", data=body, headers={"X-Signature": signature[::-1]})
    signed_post(make_message(message_id="long", text="z" * 5000))
    raw = log_lines.raw()
    assert len(request_lines(log_lines())) == 3
    for secret_thing in (SECRET, signature, signature[::-1], text, "zzzz"):
        assert secret_thing not in raw


def test_a_sane_request_id_is_kept_and_returned(client, log_lines):
    response = client.get("/stats", headers={"X-Request-ID": "abc-123.DEF_4"})
    assert response.headers["X-Request-ID"] == "abc-123.DEF_4"
    assert request_lines(log_lines())[0]["request_id"] == "abc-123.DEF_4"


@pytest.mark.parametrize("unsafe", ["has space", "a" * 129, 'quote"d', "new\\nline", "ü"])
def test_an_unsafe_request_id_is_replaced(client, log_lines, unsafe):
    response = client.get("/stats", headers={"X-Request-ID": unsafe})
    generated = response.headers["X-Request-ID"]
    assert generated != unsafe and len(generated) == 32
    assert request_lines(log_lines())[0]["request_id"] == generated


def test_request_ids_do_not_leak_into_the_next_request(client, log_lines):
    client.get("/stats", headers={"X-Request-ID": "first-id"})
    client.get("/stats")
    first, second = request_lines(log_lines())
    assert first["request_id"] == "first-id"
    assert second["request_id"] != "first-id"


def test_unhandled_exception_is_one_json_error_line_with_traceback(make_app, settings, log_lines):
    app = make_app(settings)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    broken = Blueprint("broken", __name__)

    @broken.get("/boom")
    def boom():
        local_secret = "frame-local-value"  # noqa: F841
        raise RuntimeError("kaboom")

    app.register_blueprint(broken)
    response = app.test_client().get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500 and response.get_json() == {"detail": "Internal Server Error"}
    errors = [line for line in log_lines() if line.get("exception")]
    assert len(errors) == 1
    [error] = errors
    assert error["level"] == "ERROR" and error["request_id"] == "req-500"
    assert "RuntimeError: kaboom" in error["exception"]
    assert "frame-local-value" not in log_lines.raw()
    assert request_lines(log_lines())[0]["level"] == "ERROR"


def test_log_level_is_honoured(make_app, database_url, log_lines):
    client = make_app(Settings(webhook_secrets=(SECRET,), database_url=database_url, log_level="WARNING")).test_client()
    client.get("/health/live")
    client.post("/webhook", data=b"{}")
    lines = request_lines(log_lines())
    assert [line["status"] for line in lines] == [401]


def test_python_warnings_become_json_lines(make_app, settings, log_lines):
    import warnings

    with warnings.catch_warnings():
        # pytest installs its own warning recorder for each test; start from plain Python.
        logging.captureWarnings(False)
        make_app(settings)
        warnings.simplefilter("always")
        warnings.warn("something deprecated", DeprecationWarning, stacklevel=1)
        logging.captureWarnings(False)
    [line] = [entry for entry in log_lines() if "something deprecated" in entry["event"]]
    assert line["level"] == "WARNING"


def test_413_lines_are_warnings(client, log_lines):
    client.post("/webhook", data=b"x" * 70_000)
    [line] = request_lines(log_lines())
    assert (line["status"], line["level"], line["result"]) == (413, "WARNING", "payload_too_large")


def test_control_characters_from_clients_are_escaped_in_log_lines(signed_post, client, log_lines):
    client.get("/probe%1B%5B31mred%07")
    signed_post(make_message(message_id="id\x1b[2Jwipe"))
    lines = request_lines(log_lines())
    assert lines[0]["path"] == "/probe\\x1b[31mred\\x07"
    assert lines[1]["message_id"] == "id\\x1b[2Jwipe"
    raw = log_lines.raw()
    assert "\\u001b" not in raw and "\x1b" not in raw


def test_probe_and_scrape_lines_are_debug_so_info_logs_carry_traffic(make_app, database_url, log_lines):
    quiet = make_app(Settings(webhook_secrets=(SECRET,), database_url=database_url)).test_client()
    for path in ("/health/live", "/health/ready", "/metrics", "/stats"):
        quiet.get(path)
    assert [line["path"] for line in request_lines(log_lines())] == ["/stats"]
    verbose = make_app(Settings(webhook_secrets=(SECRET,), database_url=database_url, log_level="DEBUG")).test_client()
    verbose.get("/health/live")
    [probe] = [line for line in request_lines(log_lines()) if line["path"] == "/health/live"]
    assert probe["level"] == "DEBUG"


def test_a_failing_readiness_probe_still_logs_an_error(make_app, database_url, log_lines):
    client = make_app(Settings(webhook_secrets=(), database_url=database_url)).test_client()
    assert client.get("/health/ready").status_code == 503
    [line] = request_lines(log_lines())
    assert line["level"] == "ERROR" and line["status"] == 503
