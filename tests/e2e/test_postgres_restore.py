"""A PostgreSQL database backed up and restored as docs/postgresql.md says (pg_dump, then
pg_restore into a new database of another cluster): the service starts on it as is, and a
reader following the feed goes on without a gap, although feed positions are made from
transaction ids and the new cluster's are far behind those the restored positions came from."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.messages import make_message
from tests.support.postgres import PostgresCluster
from tests.support.servers import Gunicorn, request, signed_post, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgresql_only]


def feed(port: int, after: str | None = None, wait: int = 0) -> dict:
    query = f"/feed?limit=100&wait={wait}" + ("" if after is None else f"&after={after}")
    response = request(port, "GET", query, timeout=45)
    assert response.status == 200, response.body
    return response.json()


def ids(page: dict) -> list[str]:
    return [item["message_id"] for item in page["data"]]


def test_a_database_restored_into_a_cluster_behind_its_positions_feeds_on_without_a_gap(
    tmp_path, server_env, postgres_cluster
):
    for folder in ("before", "after"):
        (tmp_path / folder).mkdir()
    busier = PostgresCluster(postgres_cluster.bindir).init()
    try:
        # A cluster that has run for a while: its transaction ids 5 * 2^32 ahead of a new one's.
        busier._run("pg_resetwal", "-e", "5", "-D", str(busier.data))
        busier.start()
        busier.setup_app_role()
        source = busier.url(busier.create_database())
        server = Gunicorn(workdir=tmp_path / "before", env={**server_env, "DATABASE_URL": source}, workers=2).start()
        try:
            for number in range(5):
                assert signed_post(server.port, make_message(message_id=f"before-{number}")).status == 200
            assert wait_until(lambda: len(ids(feed(server.port))) == 5, timeout=20)
            reader = feed(server.port)["next"]
        finally:
            server.stop()
        dump = tmp_path / "messages.dump"
        subprocess.run(
            [str(postgres_cluster.bindir / "pg_dump"), "-Fc", "-f", str(dump), source], check=True, timeout=60
        )
    finally:
        busier.destroy()
    subprocess.run(
        [str(postgres_cluster.bindir / "pg_restore"), "-d", server_env["DATABASE_URL"], str(dump)],
        check=True,
        timeout=60,
    )

    server = Gunicorn(workdir=tmp_path / "after", env=server_env, workers=2).start()
    try:
        assert ids(feed(server.port)) == [f"before-{number}" for number in range(5)]
        assert feed(server.port, after=reader) == {"data": [], "next": reader}
        assert signed_post(server.port, make_message(message_id="after-restore")).status == 200
        assert ids(feed(server.port, after=reader, wait=10)) == ["after-restore"]
        assert any("feed positions were ahead" in line for line in server.log_lines())
    finally:
        server.stop()
