"""deploy/nginx.conf in front of real gunicorn, as in the compose deployment."""

import http.client
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.messages import E2E_SECRET as SECRET
from tests.support.messages import make_message
from tests.support.servers import Gunicorn, Nginx, Response, nginx_binary, request, signed_post
from webhook_service.signatures import sign_legacy

pytestmark = [pytest.mark.e2e, pytest.mark.http_only]

if nginx_binary() is None:
    if os.environ.get("REQUIRE_NGINX"):
        raise RuntimeError("nginx is required for these tests (REQUIRE_NGINX is set) but is not installed")
    pytest.skip("nginx is not installed (apt-get install nginx)", allow_module_level=True)

# The client connects from 127.0.0.2, a loopback address that is not a trusted proxy;
# nginx reaches gunicorn from 127.0.0.1, the only trusted one.
CLIENT_ADDRESS = "127.0.0.2"


@pytest.fixture
def stack(tmp_path, server_env):
    app = Gunicorn(workdir=tmp_path, env=dict(server_env, FORWARDED_ALLOW_IPS="127.0.0.1"), workers=2).start()
    proxy = Nginx(workdir=tmp_path, upstream_port=app.port)
    try:
        proxy.start()
        yield app, proxy
    finally:
        proxy.stop()
        app.stop()


def post_from_client(port: int, body: bytes, headers: dict) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(CLIENT_ADDRESS, 0))
    try:
        conn.request("POST", "/webhook", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def app_request_lines(app: Gunicorn) -> list[dict]:
    lines = [json.loads(line) for line in app.log_lines()]
    return [line for line in lines if line.get("event") == "request" and line.get("path") == "/webhook"]


def test_signed_post_through_nginx_is_stored_and_traced_end_to_end(stack):
    app, proxy = stack
    body = json.dumps(make_message(message_id="via-nginx")).encode()
    status, headers, payload = post_from_client(
        proxy.port, body, {"X-Signature": sign_legacy(SECRET, body), "X-Forwarded-For": "198.51.100.66"}
    )
    assert status == 200 and json.loads(payload) == {"status": "ok"}
    request_id = headers["x-request-id"]
    assert request_id

    messages = request(proxy.port, "GET", "/messages").json()
    assert [m["message_id"] for m in messages["data"]] == ["via-nginx"]

    [app_line] = app_request_lines(app)
    assert app_line["request_id"] == request_id
    # The real client, not the address it claimed in X-Forwarded-For, nor nginx's.
    assert app_line["client"] == CLIENT_ADDRESS
    [nginx_line] = [line for line in proxy.access_lines() if line["path"] == "/webhook"]
    assert nginx_line["request_id"] == request_id
    assert nginx_line["client"] == CLIENT_ADDRESS
    assert nginx_line["status"] == 200


def test_a_sane_caller_request_id_is_kept_through_nginx(stack):
    app, proxy = stack
    response = signed_post(proxy.port, make_message(message_id="rid"), SECRET, headers={"X-Request-ID": "caller-7"})
    assert response.status == 200
    assert response.headers["x-request-id"] == "caller-7"
    assert app_request_lines(app)[0]["request_id"] == "caller-7"
    bad = signed_post(proxy.port, make_message(message_id="rid2"), SECRET, headers={"X-Request-ID": "bad id!"})
    assert bad.headers["x-request-id"] != "bad id!"
    assert app_request_lines(app)[1]["request_id"] == bad.headers["x-request-id"]


def test_oversized_body_gets_nginx_json_413_and_never_reaches_the_app(stack):
    app, proxy = stack
    body = json.dumps(make_message(message_id="huge", text="x" * 70_000)).encode()
    response = request(proxy.port, "POST", "/webhook", body, {"X-Signature": sign_legacy(SECRET, body)})
    assert response.status == 413
    assert response.headers["content-type"].startswith("application/json")
    assert "detail" in response.json()
    assert app_request_lines(app) == []
    assert request(proxy.port, "GET", "/messages").json()["total"] == 0


def test_with_gunicorn_stopped_nginx_answers_json_502(stack):
    app, proxy = stack
    assert request(proxy.port, "GET", "/health/live").status == 200
    app.stop()
    response = request(proxy.port, "GET", "/stats")
    assert response.status == 502
    assert response.headers["content-type"].startswith("application/json")
    assert "detail" in response.json()
    assert "<html" not in response.body.decode().lower()


def test_requests_nginx_cannot_parse_get_json_errors(stack):
    _, proxy = stack
    too_long_uri = request(proxy.port, "GET", "/" + "a" * 9000)
    too_large_header = request(proxy.port, "GET", "/stats", headers={"X-Big": "b" * 40_000})
    for response in (too_long_uri, too_large_header):
        assert response.status in (400, 414)
        assert response.headers["content-type"].startswith("application/json")
        assert "detail" in response.json()


def burst(port: int, method: str, path: str, count: int, source: str, body: bytes | None = None) -> list[Response]:
    """`count` requests as fast as 32 keep-alive connections from `source` can send them."""

    def send(share: int) -> list[Response]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))
        answers = []
        try:
            for _ in range(share):
                conn.request(method, path, body=body)
                answer = conn.getresponse()
                answers.append(Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()))
        finally:
            conn.close()
        return answers

    with ThreadPoolExecutor(max_workers=32) as pool:
        return [answer for answers in pool.map(send, [count // 32] * 32) for answer in answers]


def steady(port: int, method: str, path: str, per_second: float, seconds: float, source: str) -> list[int]:
    """Requests at a steady `per_second` from `source`; returns their statuses."""
    statuses = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))
        try:
            conn.request(method, path, body=b"{}" if method == "POST" else None)
            statuses.append(conn.getresponse().status)
        finally:
            conn.close()
        time.sleep(1 / per_second)
    return statuses


@pytest.mark.parametrize(
    "method, path, count",
    [("POST", "/webhook", 1600), ("GET", "/stats", 320)],
    ids=["deliveries", "reads"],
)
def test_a_burst_past_the_rate_limit_gets_json_429_while_a_calm_client_never_does(stack, method, path, count):
    _, proxy = stack
    with ThreadPoolExecutor(max_workers=1) as calm:
        calm_statuses = calm.submit(steady, proxy.port, method, path, 4, 2.0, "127.0.0.3")
        answers = burst(proxy.port, method, path, count, CLIENT_ADDRESS, b"{}" if method == "POST" else None)
        calm_statuses = calm_statuses.result()
    limited = [answer for answer in answers if answer.status == 429]
    assert limited, "a burst of this size must pass the configured limit"
    assert {answer.status for answer in answers} <= {429, 401 if method == "POST" else 200}
    for answer in limited[:5]:
        assert answer.json() == {"detail": "too many requests"}
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.headers["retry-after"] == "1"
        assert answer.headers["x-request-id"]
    assert calm_statuses and 429 not in calm_statuses
    # Probes stay reachable for the address that is being limited.
    assert burst(proxy.port, "GET", "/health/live", 64, CLIENT_ADDRESS)[-1].status == 200


def test_two_hundred_slow_clients_hold_nginx_not_gunicorn(stack):
    app, proxy = stack
    slow = []
    try:
        for number in range(200):
            sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            # Half the sockets trickle headers, half a body that never completes.
            if number % 2:
                sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\n")
            else:
                sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n{")
            slow.append(sock)
        for round_number in range(3):
            for sock in slow:
                sock.sendall(b"X-Slow: 1\r\n" if slow.index(sock) % 2 else b" ")
            # gunicorn has 2 workers x 16 threads: were they held, these would time out.
            for number in range(10):
                message = make_message(message_id=f"calm-{round_number}-{number}")
                assert signed_post(proxy.port, message, SECRET).status == 200
            live = request(proxy.port, "GET", "/health/live", timeout=5)
            assert live.status == 200
        assert request(app.port, "GET", "/health/live", timeout=5).status == 200
    finally:
        for sock in slow:
            sock.close()
    assert request(proxy.port, "GET", "/messages?limit=100").json()["total"] == 30
