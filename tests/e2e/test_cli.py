"""The command line while real gunicorn serves and writes the same database."""

import json
import signal
import sqlite3
import subprocess
import sys
import threading

import pytest

from tests.support.messages import E2E_SECRET as SECRET
from tests.support.messages import make_message
from tests.support.servers import ROOT, Gunicorn, Load, request, run_cli, signed_post

pytestmark = pytest.mark.e2e


cli = run_cli


def test_send_backup_purge_export_and_stats_while_the_server_writes(tmp_path, server_env, backend):
    server = Gunicorn(workdir=tmp_path, env=server_env, workers=2).start()
    env = dict(server_env)
    try:
        body = json.dumps(make_message(message_id="sent-by-cli", ts="2020-01-01T00:00:00Z")).encode()
        sent = cli(env, "send", f"http://127.0.0.1:{server.port}/webhook", "-", input=body)
        assert sent.returncode == 0 and sent.stdout.decode() == '200 {"status":"ok"}\n'
        refused = cli(env, "send", f"http://127.0.0.1:{server.port}/webhook", "-", "--key", "wrong", input=body)
        assert refused.returncode == 1 and refused.stdout.decode().startswith("401 ")
        for number in range(300):
            old = make_message(message_id=f"old-{number}", ts="2021-01-01T00:00:00Z", **{"from": f"+1{number % 7}"})
            assert signed_post(server.port, old, SECRET).status == 200

        with Load(server.port, SECRET, threads=1) as ingestion:
            copy = tmp_path / "backup.db"
            backed_up = cli(env, "backup", str(copy))
            purged = cli(env, "purge", "--before", "2022-01-01T00:00:00Z")
            exported = cli(env, "export", "--since", "2021-01-01T00:00:00Z")
        if backend == "postgresql":
            assert backed_up.returncode == 1 and b"pg_dump" in backed_up.stderr and not copy.exists()
        else:
            assert backed_up.returncode == 0, backed_up.stderr
        assert (
            purged.returncode == 0
            and purged.stdout.decode() == "deleted 301 messages with ts before 2022-01-01T00:00:00Z\n"
        )
        assert exported.returncode == 0
        assert set(ingestion.statuses) == {200} and len(ingestion.acknowledged) > 20

        if backend == "sqlite":
            with sqlite3.connect(copy) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                copied = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
                assert copied >= 301
                assert conn.execute("SELECT total_messages FROM message_totals").fetchone()[0] == copied

        stats = json.loads(cli(env, "stats").stdout)
        assert stats == request(server.port, "GET", "/stats").json()
        assert stats["total_messages"] == len(ingestion.acknowledged)
        assert request(server.port, "GET", "/messages").json()["total"] == len(ingestion.acknowledged)
    finally:
        server.stop()
    if backend == "postgresql":
        return

    # The backup serves as a database as it is.
    restored = Gunicorn(workdir=tmp_path, env=dict(server_env, DATABASE_URL=f"sqlite:///{copy}"), workers=1).start()
    try:
        assert request(restored.port, "GET", "/health/ready").status == 200
        assert request(restored.port, "GET", "/messages").json()["total"] == copied
    finally:
        restored.stop()


def read_line_within(stream, seconds: float) -> str:
    """One line from a child's pipe; fails the test instead of waiting for good."""
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    assert line, f"no line within {seconds} s"
    return line[0].decode()


def position_of_the_newest(port: int) -> str:
    return request(port, "GET", "/feed?after=latest").json()["next"]


def test_tail_prints_each_message_once_as_it_is_stored_and_where_to_resume(tmp_path, server_env):
    server = Gunicorn(workdir=tmp_path, env=server_env, workers=2).start()
    env = {**server_env, "PATH": "/usr/bin:/bin"}
    try:
        for number in range(3):
            assert signed_post(server.port, make_message(message_id=f"before-{number}"), SECRET).status == 200
        follower = subprocess.Popen(
            [sys.executable, "-m", "webhook_service", "tail"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            # tail starts at the feed's end, and says so: the three above are behind it.
            started = read_line_within(follower.stderr, 30)
            assert started == f"following the feed after position {position_of_the_newest(server.port)}\n"
            for number in range(5):
                assert signed_post(server.port, make_message(message_id=f"live-{number}"), SECRET).status == 200
            lines = [json.loads(read_line_within(follower.stdout, 30)) for _ in range(5)]
        finally:
            follower.send_signal(signal.SIGINT)
            _, stderr = follower.communicate(timeout=20)
        assert [line["message_id"] for line in lines] == [f"live-{number}" for number in range(5)]
        assert set(lines[0]) == {"message_id", "from", "to", "ts", "text", "created_at"}
        assert follower.returncode == 0
        resume = stderr.decode().strip().splitlines()[-1]
        assert resume.startswith("resume with: webhook-service tail --after ")
        position = resume.rsplit(" ", 1)[1]
        assert signed_post(server.port, make_message(message_id="after-stop"), SECRET).status == 200
        resumed = cli(env, "tail", "--after", position, "--limit", "1")
        assert resumed.returncode == 0 and [json.loads(line)["message_id"] for line in resumed.stdout.splitlines()] == [
            "after-stop"
        ]
        everything = cli(env, "tail", "--beginning", "--limit", "9")
        assert [json.loads(line)["message_id"] for line in everything.stdout.splitlines()] == [
            *(f"before-{number}" for number in range(3)),
            *(f"live-{number}" for number in range(5)),
            "after-stop",
        ]
        bad = cli(env, "tail", "--after", "nowhere")
        assert bad.returncode == 2 and b"--after" in bad.stderr
    finally:
        server.stop()
