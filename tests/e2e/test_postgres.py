"""Several app hosts on one PostgreSQL server, and that server restarted under load."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.database import fold_counts, run_sql, stored_ids
from tests.support.messages import E2E_SECRET as SECRET
from tests.support.messages import make_message
from tests.support.postgres import APP_PASSWORD, PostgresCluster, postgres_bindir
from tests.support.servers import Gunicorn, Load, request, signed_post, wait_until
from webhook_service.storage.migrations import head_revision

pytestmark = [pytest.mark.e2e, pytest.mark.postgresql_only]

RACED_ID = "raced-across-hosts"


def test_two_hosts_starting_together_race_one_id_and_keep_every_unique_one(tmp_path, server_env, backend):
    hosts = [Gunicorn(workdir=tmp_path, env=server_env, workers=workers) for workers in (2, 3)]
    # Both masters migrate the same new database at once: the advisory lock makes them take turns.
    starters = [threading.Thread(target=host.start) for host in hosts]
    try:
        for starter in starters:
            starter.start()
        for starter in starters:
            starter.join(timeout=60)
        for host in hosts:
            assert request(host.port, "GET", "/health/ready").status == 200, host.output()[-2000:]
        assert run_sql(server_env["DATABASE_URL"], "SELECT version_num FROM alembic_version") == [(head_revision(),)]

        barrier = threading.Barrier(64)
        bodies = {number: f"body number {number}" for number in range(64)}

        def race(number: int) -> int:
            payload = make_message(message_id=RACED_ID, text=bodies[number])
            barrier.wait(timeout=30)
            headers = {"X-Request-ID": f"race-{number}"}
            return signed_post(hosts[number % 2].port, payload, SECRET, headers).status

        def unique(number: int) -> int:
            payload = make_message(message_id=f"unique-{number}", text=f"unique {number}")
            return signed_post(hosts[number % 2].port, payload, SECRET).status

        with ThreadPoolExecutor(max_workers=80) as pool:
            raced = pool.map(race, range(64))
            uniques = pool.map(unique, range(300))
            raced, uniques = list(raced), list(uniques)
        assert raced == [200] * 64 and uniques == [200] * 300
    finally:
        for host in hosts:
            host.stop()

    rows = run_sql(server_env["DATABASE_URL"], "SELECT text FROM messages WHERE message_id = :id", {"id": RACED_ID})
    assert len(rows) == 1
    # The one delivery acknowledged as new (dup false), on whichever host, is the body stored.
    firsts = [
        entry
        for host in hosts
        for entry in map(json.loads, host.log_lines())
        if entry.get("message_id") == RACED_ID and entry.get("dup") is False
    ]
    assert len(firsts) == 1
    assert rows[0][0] == bodies[int(firsts[0]["request_id"].removeprefix("race-"))]
    stored = set(stored_ids(server_env["DATABASE_URL"]))
    assert {f"unique-{number}" for number in range(300)} <= stored and len(stored) == 301
    # Each host named its database at start, without its password.
    for host in hosts:
        [started] = [entry for entry in map(json.loads, host.log_lines()) if "schema revision" in entry["event"]]
        assert started["database"].startswith("postgresql+psycopg://webhook:***@127.0.0.1:")
        assert APP_PASSWORD not in host.output()
    # The count changes the hosts wrote and had not folded yet (they fold every second) count too.
    fold_counts(server_env["DATABASE_URL"])
    stats = run_sql(server_env["DATABASE_URL"], "SELECT total_messages, senders_count FROM message_totals")
    assert stats == [(301, 1)]


@pytest.fixture
def own_cluster():
    """A PostgreSQL server of this test's own, which it may stop and start."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed")
    cluster = PostgresCluster(bindir).init().start()
    cluster.setup_app_role()
    yield cluster
    cluster.destroy()


def test_a_postgresql_restart_under_load_answers_503_then_recovers_losing_nothing(tmp_path, own_cluster, backend):
    url = own_cluster.url(own_cluster.create_database())
    server = Gunicorn(workdir=tmp_path, env={"WEBHOOK_SECRET": SECRET, "DATABASE_URL": url}, workers=2).start()
    try:
        assert wait_until(lambda: len(server.worker_pids()) == 2)
        workers = sorted(server.worker_pids())
        with Load(server.port, SECRET, threads=6) as load:
            assert wait_until(lambda: len(load.acknowledged) > 50, timeout=20)
            # A crash of the database server: no shutdown checkpoint, connections cut.
            own_cluster.stop("immediate")
            down = signed_post(server.port, make_message(message_id="while-down"), SECRET)
            ready = request(server.port, "GET", "/health/ready")
            reads = request(server.port, "GET", "/stats")
            time.sleep(1.0)
            own_cluster.start()
            assert wait_until(lambda: request(server.port, "GET", "/health/ready").status == 200, timeout=30)
            acknowledged_before = len(load.acknowledged)
            assert wait_until(lambda: len(load.acknowledged) > acknowledged_before + 50, timeout=20)
        for answer in (down, ready, reads):
            assert answer.status == 503 and answer.headers["retry-after"] == "5", answer
            assert "Traceback" not in answer.body.decode()
        assert ready.json()["status"] == "not_ready"
        assert set(load.statuses) <= {200, 503}, set(load.statuses)
        assert 503 in load.statuses
        # No worker was restarted: their pools reconnected on their own.
        assert sorted(server.worker_pids()) == workers
    finally:
        server.stop()
    missing = set(load.acknowledged) - set(stored_ids(url))
    assert not missing, f"{len(missing)} acknowledged messages lost"
    assert "Traceback" not in server.output()
