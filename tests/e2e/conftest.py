import pytest

from tests.e2e.server import Gunicorn

SECRET = "e2e-secret"


@pytest.fixture
def server_env(tmp_path) -> dict[str, str]:
    return {
        "WEBHOOK_SECRET": SECRET,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'messages.db'}",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture
def gunicorn_server(tmp_path, server_env):
    """Real gunicorn with 3 workers on a free loopback port; always stopped after the test."""
    server = Gunicorn(workdir=tmp_path, env=server_env, workers=3)
    server.start()
    yield server
    server.stop()
