import pytest

from tests.support.forwarder import Forwarder
from tests.support.servers import Gunicorn

SECRET = "e2e-secret"


@pytest.fixture
def server_env(request, backend, tmp_path) -> dict[str, str]:
    """The server's environment: a new SQLite file, or a new empty PostgreSQL database
    (the server migrates it at start), by the test's backend."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'messages.db'}"
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        url = cluster.url(cluster.create_database())
    return {"WEBHOOK_SECRET": SECRET, "DATABASE_URL": url, "LOG_LEVEL": "INFO"}


@pytest.fixture
def gunicorn_server(tmp_path, server_env):
    """Real gunicorn with 3 workers on a free loopback port; always stopped after the test."""
    server = Gunicorn(workdir=tmp_path, env=server_env, workers=3)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def served(tmp_path, server_env):
    """A 2-worker gunicorn, and a list of the consumers and forwarders the test starts:
    every one is stopped after the test (forwarders killed), the server last."""
    server = Gunicorn(workdir=tmp_path, env=server_env, workers=2).start()
    started: list = [server]
    yield server, started
    for process in reversed(started):
        if isinstance(process, Forwarder):
            process.kill()
        else:
            process.stop()
