"""The service as deployed: real gunicorn, several worker processes, a real SQLite file."""

import json
import socket
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.database import run_sql, stored_ids
from tests.support.messages import E2E_SECRET as SECRET
from tests.support.messages import make_message
from tests.support.servers import Gunicorn, chunked_post, concurrent_posts, free_port, request, signed_post, wait_until
from webhook_service.signatures import sign_legacy
from webhook_service.storage.migrations import known_revisions, upgrade_to_head

pytestmark = pytest.mark.e2e


def database_path(env: dict) -> Path:
    return Path(env["DATABASE_URL"].removeprefix("sqlite:///"))


def test_concurrent_duplicates_store_exactly_one_row(gunicorn_server, server_env):
    statuses = concurrent_posts(gunicorn_server.port, make_message(message_id="same", text="first"), 48)
    assert statuses == [200] * 48
    assert stored_ids(server_env["DATABASE_URL"]) == ["same"]


def test_migrations_ran_once_in_the_master(gunicorn_server, server_env, backend):
    lines = gunicorn_server.log_lines()
    assert sum("Running upgrade" in line for line in lines) == len(known_revisions())
    # alembic says this once per run, also when there is nothing to upgrade: a worker that
    # migrated at its start would add a line of its own.
    impl = {"sqlite": "SQLiteImpl", "postgresql": "PostgresqlImpl"}[backend]
    assert sum(f"Context impl {impl}" in line for line in lines) == 1
    if backend == "sqlite":
        with sqlite3.connect(database_path(server_env)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert request(gunicorn_server.port, "GET", "/health/ready").status == 200


def test_acknowledged_message_survives_a_restart(tmp_path, server_env):
    first = Gunicorn(workdir=tmp_path, env=server_env).start()
    try:
        assert signed_post(first.port, make_message(message_id="keep-me"), SECRET).status == 200
    finally:
        first.stop()
    second = Gunicorn(workdir=tmp_path, env=server_env).start()
    try:
        body = request(second.port, "GET", "/messages").json()
        assert [m["message_id"] for m in body["data"]] == ["keep-me"]
        assert sum("Running upgrade" in line for line in second.log_lines()) == 0
    finally:
        second.stop()


@pytest.mark.sqlite_only
def test_a_clean_stop_leaves_only_the_database_files(tmp_path, server_env):
    server = Gunicorn(workdir=tmp_path, env=server_env).start()
    try:
        assert signed_post(server.port, make_message(message_id="one"), SECRET).status == 200
        folder = database_path(server_env).parent
        assert any(path.name.endswith("-writer.lock") for path in folder.iterdir())
    finally:
        assert server.stop() == 0
    name = database_path(server_env).name
    left = sorted(path.name for path in folder.iterdir() if path.name.startswith(name))
    assert left == [name] or set(left) <= {name, f"{name}-wal", f"{name}-shm"}, left
    assert not any(name.endswith(".lock") for name in left)


def test_acknowledged_messages_survive_killed_workers(gunicorn_server, server_env):
    port = gunicorn_server.port
    for number in range(20):
        assert signed_post(port, make_message(message_id=f"k{number}"), SECRET).status == 200
    gunicorn_server.kill_workers()
    assert request(port, "GET", "/messages?limit=100").json()["total"] == 20
    assert len(stored_ids(server_env["DATABASE_URL"])) == 20


@pytest.mark.http_only
def test_without_a_secret_it_serves_but_is_not_ready(tmp_path, server_env):
    env = dict(server_env, WEBHOOK_SECRET="")
    server = Gunicorn(workdir=tmp_path, env=env).start()
    try:
        assert request(server.port, "GET", "/health/live").status == 200
        ready = request(server.port, "GET", "/health/ready")
        assert ready.status == 503 and ready.json()["status"] == "not_ready"
        assert signed_post(server.port, make_message(), "").status == 503
    finally:
        server.stop()


@pytest.mark.http_only
@pytest.mark.parametrize(
    "env_change, named",
    [
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"PORT": "eighty"}, "PORT"),
    ],
)
def test_bad_settings_fail_at_start_with_one_clear_line(tmp_path, server_env, env_change, named):
    server = Gunicorn(workdir=tmp_path, env=dict(server_env, **env_change)).start(wait=False)
    try:
        assert server.wait_for_exit() != 0
    finally:
        server.stop()
    lines = server.log_lines()
    parsed = [json.loads(line) for line in lines]  # every line, not only the error, is JSON
    errors = [entry for entry in parsed if entry["level"] == "ERROR"]
    assert len(errors) == 1, lines
    assert named in errors[0]["event"]
    assert "Traceback" not in server.output()


def test_unwritable_database_fails_at_start_without_a_traceback(tmp_path, server_env):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    env = dict(server_env, DATABASE_URL=f"sqlite:///{blocker / 'messages.db'}")
    server = Gunicorn(workdir=tmp_path, env=env).start(wait=False)
    try:
        assert server.wait_for_exit() != 0
    finally:
        server.stop()
    assert "Traceback" not in server.output()
    assert any("database migration failed" in line for line in server.log_lines())


@pytest.mark.http_only
def test_chunked_bodies_are_limited_too(gunicorn_server, server_env):
    port = gunicorn_server.port
    large = json.dumps(make_message(message_id="chunked-large", text="x" * 70_000)).encode()
    status, body = chunked_post(port, large, {"X-Signature": sign_legacy(SECRET, large)})
    assert status == 413 and "detail" in json.loads(body)
    small = json.dumps(make_message(message_id="chunked-small")).encode()
    status, _ = chunked_post(port, small, {"X-Signature": sign_legacy(SECRET, small)})
    assert status == 200
    assert stored_ids(server_env["DATABASE_URL"]) == ["chunked-small"]


@pytest.mark.http_only
@pytest.mark.parametrize(
    "raw",
    [
        b"NOT A REQUEST\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ],
)
def test_requests_gunicorn_cannot_parse_get_json_errors(gunicorn_server, raw):
    with socket.create_connection(("127.0.0.1", gunicorn_server.port), timeout=10) as sock:
        sock.sendall(raw)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] in (b"400", b"414", b"431")
    assert b"Content-Type: application/json" in head
    assert "detail" in json.loads(body)


@pytest.mark.http_only
def test_requests_gunicorn_cannot_parse_log_no_query_string_and_no_header_value(gunicorn_server):
    for raw in (
        b"GET /messages?q=searched-words&from=+1555 HTTP/1.1 trailing\r\nHost: x\r\n\r\n",
        b"GET /messages?q=searched-words\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /stats HTTP/1.1\r\nHost: x\r\nAuthorization Bearer token-that-must-not-leak\r\n\r\n",
        b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Secret Value: hidden-value\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", gunicorn_server.port), timeout=10) as sock:
            sock.sendall(raw)
            assert sock.recv(65536).startswith(b"HTTP/1.1 400")
    assert wait_until(lambda: sum("Invalid request from ip=" in line for line in gunicorn_server.log_lines()) == 4)
    warnings = [json.loads(line) for line in gunicorn_server.log_lines() if "Invalid request from ip=" in line]
    logged = "\n".join(warning["event"] for warning in warnings)
    for secret in ("searched-words", "+1555", "token-that-must-not-leak", "hidden-value", "Bearer"):
        assert secret not in logged, secret
    assert "/messages?…" in logged and "Authorization…" in logged, logged
    assert all(warning["level"] == "WARNING" for warning in warnings)


@pytest.mark.http_only
def test_host_port_and_web_concurrency_alone_configure_the_server(tmp_path, server_env):
    port = free_port()
    env = dict(server_env, HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="2")
    server = Gunicorn(workdir=tmp_path, env=env, workers=None, port=port, bind=False).start()
    try:
        assert request(port, "GET", "/health/ready").status == 200
        assert wait_until(lambda: len(server.worker_pids()) == 2)
        assert len(server.worker_pids()) == 2
    finally:
        server.stop()


def test_a_database_from_a_newer_release_stops_the_start_with_one_line(tmp_path, server_env):
    upgrade_to_head(server_env["DATABASE_URL"])
    run_sql(server_env["DATABASE_URL"], "UPDATE alembic_version SET version_num = '0042'")
    server = Gunicorn(workdir=tmp_path, env=server_env).start(wait=False)
    try:
        assert server.wait_for_exit() != 0
    finally:
        server.stop()
    parsed = [json.loads(line) for line in server.log_lines()]
    [error] = [entry for entry in parsed if entry["level"] == "ERROR"]
    assert "0042" in error["event"] and "restore a backup" in error["event"]
    assert "Traceback" not in server.output()
    assert not Path(tempfile.gettempdir(), f"webhook-service-metrics-{server.process.pid}").exists()


@pytest.mark.sqlite_only
def test_stalled_request_heads_hold_no_thread_and_are_refused_after_the_timeout(tmp_path, server_env):
    # gunicorn without nginx in front: 200 clients send part of a head and then nothing (or
    # a byte now and then), while probes and deliveries go on.
    server = Gunicorn(workdir=tmp_path, env={**server_env, "BODY_READ_TIMEOUT_SECONDS": "3"}, workers=2).start()
    stalled = []
    try:
        for number in range(200):
            client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            client.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n" if number % 2 else b"GET /health/li")
            stalled.append(client)
        answered, started = 0, time.monotonic()
        while time.monotonic() - started < 2.5:
            for client in stalled[::50]:
                client.send(b"X")  # trickling: a byte at a time keeps no thread either
            assert request(server.port, "GET", "/health/live", timeout=2).status == 200
            assert signed_post(server.port, make_message(message_id=f"meanwhile-{answered}"), SECRET).status == 200
            answered += 1
        assert answered >= 10
        # Past the timeout every stalled head is answered 408 and closed: no socket stays open.
        for client in stalled:
            client.settimeout(5)
            answer = client.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"detail": "Request Timeout"}
            assert client.recv(4096) == b""
    finally:
        for client in stalled:
            client.close()
        server.stop()
    assert "Traceback" not in server.output()


@pytest.mark.http_only
def test_a_head_sent_in_pieces_within_the_timeout_is_served(gunicorn_server):
    with socket.create_connection(("127.0.0.1", gunicorn_server.port), timeout=10) as client:
        for piece in (b"GET /health/li", b"ve HTTP/1.1\r\nHo", b"st: x\r\n", b"\r\n"):
            client.sendall(piece)
            time.sleep(0.2)
        answer = client.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200") and b'{"status":"ok"}' in answer
        # Kept alive: the next request on the connection, in pieces too.
        for piece in (b"GET /health/live HTTP/1.1\r\n", b"Host: x\r\n\r\n"):
            client.sendall(piece)
            time.sleep(0.2)
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
