"""Badly framed requests against real gunicorn: JSON answers, one WARNING line, no traceback."""

import json
import socket

import pytest

from tests.support.database import stored_ids
from tests.support.messages import E2E_SECRET as SECRET
from tests.support.messages import make_message
from tests.support.metrics import value as count
from tests.support.servers import chunked_post, request, scrape, wait_until
from webhook_service.signatures import sign_legacy

pytestmark = [pytest.mark.e2e, pytest.mark.http_only]


def exchange(port: int, raw: bytes, half_close: bool = False) -> bytes:
    """Send raw bytes, optionally close our sending side, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
                if b"\r\n\r\n" in reply and not half_close:
                    head, _, body = reply.partition(b"\r\n\r\n")
                    length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                    if length and len(body) >= int(length[0].split(b":")[1]):
                        break
        except TimeoutError:
            pass
    return reply


def status_and_json(reply: bytes) -> tuple[bytes, bytes, dict]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.split(b" ")[1], head, json.loads(body.split(b"\r\n")[0] if body.startswith(b"{") else body)


BODY = json.dumps(make_message(message_id="framed")).encode()
SIGNATURE = sign_legacy(SECRET, BODY)


@pytest.mark.parametrize(
    "raw, half_close",
    [
        (b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", False),
        (b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", True),
        (
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Signature: " + SIGNATURE.encode() + b"\r\n"
            b"Content-Length: " + str(len(BODY) + 40).encode() + b"\r\n\r\n" + BODY,
            True,
        ),
    ],
    ids=["bad-chunk-size", "ends-mid-chunk", "shorter-than-content-length"],
)
def test_a_badly_framed_body_is_a_json_400_and_one_warning(gunicorn_server, server_env, raw, half_close):
    before = count(scrape(gunicorn_server.port), "webhook_requests_total", result="bad_request")
    status, head, body = status_and_json(exchange(gunicorn_server.port, raw, half_close))
    assert status == b"400" and b"Content-Type: application/json" in head
    assert body == {"detail": "malformed request body"}
    assert stored_ids(server_env["DATABASE_URL"]) == [], "a truncated body must never be taken as complete"
    lines = [json.loads(line) for line in gunicorn_server.log_lines()]
    [line] = [entry for entry in lines if entry.get("status") == 400]
    assert line["level"] == "WARNING" and line["result"] == "bad_request"
    assert not [entry for entry in lines if entry["level"] == "ERROR"]
    assert "Traceback" not in gunicorn_server.output()
    assert count(scrape(gunicorn_server.port), "webhook_requests_total", result="bad_request") == before + 1


def test_an_unknown_transfer_coding_is_501_not_implemented(gunicorn_server):
    raw = b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
    _, head, body = status_and_json(exchange(gunicorn_server.port, raw))
    assert head.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    assert body == {"detail": "Not Implemented"}


@pytest.mark.parametrize("extra, status", [(0, 200), (1, 413)])
def test_the_limit_is_exact_for_declared_and_chunked_bodies(tmp_path, server_env, extra, status):
    from tests.support.servers import Gunicorn

    server = Gunicorn(workdir=tmp_path, env=dict(server_env, MAX_BODY_BYTES="400"), workers=1).start()
    try:
        for number, send in enumerate(("declared", "chunked")):
            body = json.dumps(make_message(message_id=f"{send}-{extra}", text="")).encode()
            body = body[:-1] + b" " * (400 - len(body) + extra) + b"}"
            headers = {"X-Signature": sign_legacy(SECRET, body)}
            if send == "declared":
                answer = request(server.port, "POST", "/webhook", body, headers).status
            else:
                answer, _ = chunked_post(server.port, body, headers)
            assert answer == status, send
    finally:
        server.stop()


def test_options_and_control_characters_through_gunicorn(gunicorn_server):
    response = request(gunicorn_server.port, "OPTIONS", "/messages")
    assert response.status == 200 and response.headers["content-type"] == "application/json"
    assert set(response.json()["allow"]) == {"GET", "HEAD", "OPTIONS"}
    request(gunicorn_server.port, "GET", "/x%1B%5D0;owned%07")
    assert "\\u001b" not in gunicorn_server.output() and "\x1b" not in gunicorn_server.output()
    assert any("\\\\x1b]0;owned\\\\x07" in line for line in gunicorn_server.log_lines())


def test_a_body_that_stops_arriving_frees_its_thread_with_a_400(tmp_path, server_env):
    from tests.support.servers import Gunicorn

    server = Gunicorn(workdir=tmp_path, env=dict(server_env, BODY_READ_TIMEOUT_SECONDS="1"), workers=1).start()
    stalled = []
    try:
        # One worker has 16 threads: 20 stalled bodies would hold all of them for good.
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
            stalled.append(sock)
        for sock in stalled:
            reply = b""
            while b"malformed request body" not in reply and (chunk := sock.recv(65536)):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 400 ") and b"malformed request body" in reply
        # gunicorn then spends at most its own 5 s trying to skip the missing rest: the
        # threads come back, where without the timeout they would be held for good.
        assert wait_until(lambda: request(server.port, "GET", "/health/live", timeout=2).status == 200, timeout=20)
    finally:
        for sock in stalled:
            sock.close()
        server.stop()
