"""Signatures and tokens through real gunicorn with 3 workers, as a sender and an operator see them."""

import base64
import json
import random
import time

import pytest

from tests.support.messages import make_message
from tests.support.servers import Gunicorn, request
from webhook_service.signatures import sign_legacy, standard_headers

pytestmark = pytest.mark.e2e

OLD_SECRET = "old-e2e-secret"
NEW_SECRET = "whsec_" + base64.b64encode(b"the new e2e secret key").decode()
READ_TOKEN = "e2e-read-token-0123456789"
METRICS_TOKEN = "e2e-metrics-token-0123456789"
PRIVATE_TEXT = "a very private text"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trust")
    (workdir / "secrets").write_text(f"{OLD_SECRET}\n{NEW_SECRET}\n")
    env = {
        "WEBHOOK_SECRET_FILE": str(workdir / "secrets"),
        "DATABASE_URL": f"sqlite:///{workdir / 'messages.db'}",
        "API_TOKENS": READ_TOKEN,
        "METRICS_TOKEN": METRICS_TOKEN,
        "WEBHOOK_TOLERANCE_SECONDS": "60",
    }
    gunicorn = Gunicorn(workdir=workdir, env=env, workers=3).start()
    yield gunicorn
    gunicorn.stop()


def post(port: int, body: bytes, headers: dict):
    return request(port, "POST", "/webhook", body, headers)


def read(port: int, path: str, token: str | None = READ_TOKEN):
    return request(port, "GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})


def test_both_schemes_and_both_secrets_are_accepted(server):
    stored = []
    for number, secret in enumerate((OLD_SECRET, NEW_SECRET)):
        body = json.dumps(make_message(message_id=f"std-{number}", text=PRIVATE_TEXT)).encode()
        assert post(server.port, body, standard_headers(secret, f"msg_{number}", int(time.time()), body)).status == 200
        body = json.dumps(make_message(message_id=f"legacy-{number}", text=PRIVATE_TEXT)).encode()
        assert post(server.port, body, {"X-Signature": sign_legacy(secret, body)}).status == 200
        stored += [f"std-{number}", f"legacy-{number}"]
    listed = read(server.port, "/messages?limit=100").json()["data"]
    assert set(stored) <= {message["message_id"] for message in listed}


def test_a_replayed_delivery_is_refused_and_counted(server):
    body = json.dumps(make_message(message_id="replayed")).encode()
    response = post(server.port, body, standard_headers(NEW_SECRET, "msg_old", int(time.time()) - 3600, body))
    assert response.status == 401 and response.json() == {"detail": "timestamp outside tolerance"}
    metrics = read(server.port, "/metrics", METRICS_TOKEN).body.decode()
    assert 'webhook_requests_total{result="stale_timestamp"} 1.0' in metrics
    listed = read(server.port, "/messages?limit=100").json()["data"]
    assert "replayed" not in {message["message_id"] for message in listed}


def test_reads_and_metrics_need_their_tokens_on_every_worker(server):
    for _ in range(12):
        for path in ("/messages", "/stats"):
            refused = read(server.port, path, token=None)
            assert refused.status == 401 and refused.headers["www-authenticate"] == "Bearer"
            assert read(server.port, path, token=METRICS_TOKEN).status == 401
            assert read(server.port, path).status == 200
        assert read(server.port, "/metrics", token=READ_TOKEN).status == 401
        assert read(server.port, "/metrics", token=METRICS_TOKEN).status == 200
        assert request(server.port, "GET", "/health/ready").status == 200


def test_fuzzed_signature_headers_answer_401_or_200_never_500(server):
    rng = random.Random(7)
    statuses = set()
    for number in range(150):
        body = json.dumps(make_message(message_id=f"fuzz-{number}")).encode()
        headers = standard_headers(NEW_SECRET, f"id{number}", int(time.time()), body)
        for name in headers:
            if rng.random() < 0.6:
                headers[name] = rng.choice(
                    [
                        rng.randbytes(rng.randint(0, 60)).hex(),
                        " ".join("v1," + base64.b64encode(rng.randbytes(32)).decode() for _ in range(150)),
                        "v1,!!!not-base64",
                        str(rng.choice([-1, 2**64, 10**12])),
                        "9" * rng.randint(1, 4000),
                        "v1a," + base64.b64encode(rng.randbytes(64)).decode(),
                    ]
                )
        response = post(server.port, body, headers)
        statuses.add(response.status)
        assert response.status in (200, 401), response.body
        assert "detail" in response.json() or response.json() == {"status": "ok"}
    assert statuses == {200, 401}


def test_the_output_never_holds_secrets_tokens_signatures_or_texts(server):
    body = json.dumps(make_message(message_id="leak-check", text=PRIVATE_TEXT)).encode()
    headers = standard_headers(NEW_SECRET, "msg_leak", int(time.time()), body)
    assert post(server.port, body, headers).status == 200
    legacy = sign_legacy(OLD_SECRET, body)
    assert post(server.port, body, {"X-Signature": legacy[::-1]}).status == 401
    read(server.port, "/stats", token="wrong-token-but-long-enough")
    output = server.output()
    for secret_thing in (
        OLD_SECRET,
        NEW_SECRET[6:],
        READ_TOKEN,
        METRICS_TOKEN,
        "wrong-token-but-long-enough",
        headers["webhook-signature"][3:],
        legacy,
        legacy[::-1],
        PRIVATE_TEXT,
    ):
        assert secret_thing not in output
    lines = [json.loads(line) for line in server.log_lines()]
    assert any(line.get("webhook_id") == "msg_leak" for line in lines)
    assert any(line.get("reason") == "bad_token" for line in lines)


def test_open_reads_are_announced_once_at_start(tmp_path):
    env = {"WEBHOOK_SECRET": OLD_SECRET, "DATABASE_URL": f"sqlite:///{tmp_path / 'open.db'}"}
    server = Gunicorn(workdir=tmp_path, env=env, workers=2).start()
    try:
        assert request(server.port, "GET", "/stats").status == 200
        warnings = [json.loads(line) for line in server.log_lines() if "API_TOKENS" in line]
        assert len(warnings) == 1 and warnings[0]["level"] == "WARNING"
    finally:
        server.stop()
