"""POST /webhook under Standard Webhooks, asymmetric keys, rotation and SIGNATURE_SCHEMES."""

import base64
import json
import random
import time
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks import Webhook

from tests.support.logs import request_lines
from tests.support.messages import make_message
from tests.support.metrics import samples, value
from webhook_service.config import Settings
from webhook_service.signatures import Scheme, sign_legacy, standard_headers

WHSEC = "whsec_" + base64.b64encode(b"sixteen byte key").decode()


@pytest.fixture
def app_with(make_app, database_url):
    def build(**settings):
        settings.setdefault("webhook_secrets", (WHSEC,))
        return make_app(Settings(database_url=database_url, **settings)).test_client()

    return build


def reference_headers(secret: str, webhook_id: str, body: bytes, timestamp: float | None = None) -> dict:
    """Headers signed by the Standard Webhooks reference library."""
    moment = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, tz=UTC)
    signature = Webhook(secret).sign(webhook_id, moment, body.decode())
    return {"webhook-id": webhook_id, "webhook-timestamp": str(int(moment.timestamp())), "webhook-signature": signature}


def post(client, payload: dict, headers: dict):
    return client.post("/webhook", data=json.dumps(payload).encode(), headers=headers)


def test_a_delivery_signed_by_the_reference_library_is_stored(app_with, stored_messages):
    client = app_with()
    body = json.dumps(make_message(message_id="sw1")).encode()
    response = client.post("/webhook", data=body, headers=reference_headers(WHSEC, "msg_1", body))
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}
    assert [row["message_id"] for row in stored_messages()] == ["sw1"]


@pytest.mark.parametrize("skew", [-302, 302, -86_400])
def test_a_replayed_or_future_delivery_is_refused_as_stale(app_with, stored_messages, log_lines, skew):
    client = app_with(tolerance_seconds=300)
    body = json.dumps(make_message()).encode()
    response = client.post("/webhook", data=body, headers=reference_headers(WHSEC, "msg_1", body, time.time() + skew))
    assert response.status_code == 401
    assert response.get_json() == {"detail": "timestamp outside tolerance"}
    assert stored_messages() == []
    [line] = request_lines(log_lines())
    assert (line["result"], line["reason"], line["webhook_id"]) == ("stale_timestamp", "stale_timestamp", "msg_1")
    assert value(samples(client), "webhook_requests_total", result="stale_timestamp") == 1


def test_the_tolerance_is_configurable(app_with):
    client = app_with(tolerance_seconds=3600)
    body = json.dumps(make_message()).encode()
    response = client.post("/webhook", data=body, headers=reference_headers(WHSEC, "msg_1", body, time.time() - 1800))
    assert response.status_code == 200


def test_every_configured_secret_is_accepted_during_rotation(app_with, stored_messages):
    client = app_with(webhook_secrets=("old-secret", WHSEC))
    first, second, third = (json.dumps(make_message(message_id=f"r{n}")).encode() for n in range(3))
    assert (
        client.post("/webhook", data=first, headers={"X-Signature": sign_legacy("old-secret", first)}).status_code
        == 200
    )
    now = int(time.time())
    assert (
        client.post("/webhook", data=second, headers=standard_headers("old-secret", "a", now, second)).status_code
        == 200
    )
    assert client.post("/webhook", data=third, headers=standard_headers(WHSEC, "b", now, third)).status_code == 200
    retired = client.post("/webhook", data=third, headers=standard_headers("retired", "c", now, third))
    assert retired.status_code == 401
    assert len(stored_messages()) == 3


def test_legacy_can_be_switched_off(app_with, log_lines):
    client = app_with(webhook_secrets=("s3cret",), signature_schemes=frozenset({Scheme.STANDARD}))
    body = json.dumps(make_message()).encode()
    response = client.post("/webhook", data=body, headers={"X-Signature": sign_legacy("s3cret", body)})
    assert response.status_code == 401 and response.get_json() == {"detail": "invalid signature"}
    assert request_lines(log_lines())[0]["reason"] == "scheme_disabled"
    ok = client.post("/webhook", data=body, headers=standard_headers("s3cret", "x", int(time.time()), body))
    assert ok.status_code == 200


def test_standard_can_be_switched_off(app_with):
    client = app_with(webhook_secrets=("s3cret",), signature_schemes=frozenset({Scheme.LEGACY}))
    body = json.dumps(make_message()).encode()
    refused = client.post("/webhook", data=body, headers=standard_headers("s3cret", "x", int(time.time()), body))
    assert refused.status_code == 401
    assert client.post("/webhook", data=body, headers={"X-Signature": sign_legacy("s3cret", body)}).status_code == 200


def test_public_keys_alone_make_the_service_ready_and_verify_v1a(app_with, stored_messages):
    private = Ed25519PrivateKey.generate()
    signing_key = "whsk_" + base64.b64encode(private.private_bytes_raw()).decode()
    public_key = "whpk_" + base64.b64encode(private.public_key().public_bytes_raw()).decode()
    client = app_with(webhook_secrets=(), public_keys=(public_key,))
    assert client.get("/health/ready").get_json()["checks"]["secret"] == "ok"
    body = json.dumps(make_message(message_id="asym")).encode()
    response = client.post(
        "/webhook", data=body, headers=standard_headers(signing_key, "msg_a", int(time.time()), body)
    )
    assert response.status_code == 200
    assert client.post("/webhook", data=body, headers={"X-Signature": sign_legacy("", body)}).status_code == 401
    assert [row["message_id"] for row in stored_messages()] == ["asym"]


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "missing_headers"),
        ({"webhook-signature": "v1,AAAA", "webhook-timestamp": "1"}, "missing_headers"),
        ({"webhook-id": "i", "webhook-timestamp": "soon", "webhook-signature": "v1,AAAA"}, "malformed_timestamp"),
        ({"webhook-id": "i", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}, "no_match"),
        ({"X-Signature": "0" * 64}, "no_match"),
    ],
)
def test_every_refusal_logs_its_reason_as_a_warning(app_with, log_lines, headers, reason):
    response = post(app_with(), make_message(), headers)
    assert response.status_code == 401 and response.get_json() == {"detail": "invalid signature"}
    [line] = request_lines(log_lines())
    assert (line["reason"], line["result"], line["level"]) == (reason, "invalid_signature", "WARNING")


def test_the_webhook_id_is_logged_and_no_signature_or_secret_is(app_with, log_lines):
    client = app_with()
    body = json.dumps(make_message(text="private words")).encode()
    headers = reference_headers(WHSEC, "msg_logged", body)
    client.post("/webhook", data=body, headers=headers)
    [line] = request_lines(log_lines())
    assert line["webhook_id"] == "msg_logged" and line["result"] == "success"
    raw = log_lines.raw()
    for secret_thing in (WHSEC, WHSEC[6:], headers["webhook-signature"], headers["webhook-signature"][3:], "private"):
        assert secret_thing not in raw


def test_without_secret_or_key_ingestion_answers_503_with_retry_after(app_with):
    response = post(app_with(webhook_secrets=()), make_message(), {})
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()


@pytest.mark.parametrize("seed", range(40))
def test_fuzzed_signature_headers_answer_only_401_or_200(app_with, seed):
    rng = random.Random(seed)
    client = app_with()
    body = json.dumps(make_message(message_id=f"f{seed}")).encode()
    valid = standard_headers(WHSEC, f"id{seed}", int(time.time()), body)
    choices = [
        lambda: rng.randbytes(rng.randint(0, 200)).decode("latin-1").replace("\n", "").replace("\r", ""),
        lambda: " ".join(f"v1,{base64.b64encode(rng.randbytes(32)).decode()}" for _ in range(rng.randint(0, 300))),
        lambda: "v1," + "!" * rng.randint(0, 100),
        lambda: str(rng.choice([-(2**70), 0, 2**70, 10**30])),
        lambda: "9" * rng.randint(1, 5000),
        lambda: "v1a," + base64.b64encode(rng.randbytes(64)).decode(),
    ]
    headers = {name: (rng.choice(choices)() if rng.random() < 0.7 else header) for name, header in valid.items()}
    response = client.post("/webhook", data=body, headers=headers)
    assert response.status_code in (200, 401)
    assert response.get_json()["detail" if response.status_code == 401 else "status"]
