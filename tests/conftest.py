"""Fixtures: a freshly migrated database per test, an app on it, and a signed-post helper.

Every test that uses a database runs twice: on a SQLite file and on a new database of a
throwaway PostgreSQL cluster (tests/support/postgres.py). Without PostgreSQL installed the second
run is skipped, saying so; with REQUIRE_POSTGRES=1 (CI) it fails instead. Tests marked
`sqlite_only` are about SQLite's files, and tests marked `http_only` about what no database
changes (HTTP framing, proxies, logs, metrics, settings): both run once, on SQLite.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.support.messages import SECRET, signed_body
from webhook_service import create_app
from webhook_service.api.context import COUNT_FOLDER_KEY, DATABASE_KEY, FEED_WAITERS_KEY, RETENTION_KEY
from webhook_service.config import Settings
from webhook_service.observability.logging import json_formatter
from webhook_service.signatures import sign_legacy
from webhook_service.storage.migrations import upgrade_to_head

BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: about SQLite's files or pragmas; runs on SQLite alone")
    config.addinivalue_line(
        "markers",
        "http_only: about HTTP, the server, its logs, metrics or settings, which no database changes; "
        "runs once, on SQLite (what differs by database is tested on both elsewhere)",
    )
    config.addinivalue_line("markers", "postgresql_only: about PostgreSQL alone")


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames:
        return
    backends = BACKENDS
    if metafunc.definition.get_closest_marker("sqlite_only") or metafunc.definition.get_closest_marker("http_only"):
        backends = ("sqlite",)
    elif metafunc.definition.get_closest_marker("postgresql_only"):
        backends = ("postgresql",)
    metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request) -> str:
    """The database the test runs on: "sqlite" or "postgresql"."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def postgres_cluster():
    """A PostgreSQL cluster for the whole run, with a database migrated to head to copy."""
    from tests.support.postgres import PostgresCluster, postgres_bindir

    bindir = postgres_bindir()
    if bindir is None:
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail("REQUIRE_POSTGRES=1 but PostgreSQL is not installed (no initdb found)")
        pytest.skip("PostgreSQL is not installed (no initdb): the tests on PostgreSQL are skipped")
    cluster = PostgresCluster(bindir).init().start()
    try:
        cluster.setup_app_role()
        cluster.migrated_template = cluster.create_database()
        upgrade_to_head(cluster.url(cluster.migrated_template))
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def empty_database_url(request, backend, tmp_path) -> str:
    """A database the migrations have not touched: a new SQLite path or an empty PostgreSQL database."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'messages.db'}"
    cluster = request.getfixturevalue("postgres_cluster")
    return cluster.url(cluster.create_database())


@pytest.fixture(autouse=True)
def _environment_as_found():
    # The command line, run in process, sets what a dotenv file holds in os.environ; monkeypatch
    # restores only what it was told of (a delenv of a name not set records nothing), so a
    # test's WEBHOOK_SECRET could reach the servers later tests start. Each test leaves the
    # environment as it found it.
    found = dict(os.environ)
    yield
    if os.environ != found:
        os.environ.clear()
        os.environ.update(found)


@pytest.fixture(autouse=True)
def _no_env_file(_environment_as_found, monkeypatch):
    # The command line reads .env from the current folder: a developer's own must not leak in.
    monkeypatch.setenv("WEBHOOK_SERVICE_ENV_FILE", os.devnull)


@pytest.fixture(autouse=True)
def _single_process_metrics(monkeypatch):
    # A multiprocess folder from the surrounding shell would change how /metrics collects.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory) -> Path:
    """A SQLite file the migrations brought to the newest revision, once per test process."""
    path = tmp_path_factory.mktemp("template") / "messages.db"
    upgrade_to_head(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(request, backend, tmp_path) -> str:
    """A database migrated to the newest revision, on the test's backend (a copy of one
    migrated once: the migrations' result is the same file every time)."""
    if backend == "sqlite":
        path = tmp_path / "messages.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite_template"), path)
        return f"sqlite:///{path}"
    cluster = request.getfixturevalue("postgres_cluster")
    return cluster.url(cluster.create_database(template=cluster.migrated_template))


@pytest.fixture
def settings(database_url) -> Settings:
    return Settings(webhook_secrets=(SECRET,), database_url=database_url)


@pytest.fixture
def make_app():
    """Build apps from Settings, each with its own metrics registry; disposes them after."""
    apps = []

    def build(settings: Settings):
        app = create_app(settings, metrics_registry=CollectorRegistry())
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions[FEED_WAITERS_KEY].close()
        for stoppable in (app.extensions[COUNT_FOLDER_KEY], app.extensions[RETENTION_KEY]):
            if stoppable is not None:
                stoppable.close()
        app.extensions[DATABASE_KEY].dispose()


@pytest.fixture
def app(make_app, settings):
    return make_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def signed_post(client):
    """POST /webhook with a correct X-Signature over exactly the bytes sent."""

    def post(payload=None, *, body: bytes | None = None, secret: str = SECRET, headers=None):
        if body is None:
            body, all_headers = signed_body(payload, secret)
        else:
            all_headers = {"X-Signature": sign_legacy(secret, body), "Content-Type": "application/json"}
        all_headers.update(headers or {})
        return client.post("/webhook", data=body, headers=all_headers)

    return post


@pytest.fixture
def stored_messages(settings):
    """Read the messages table directly, bypassing the API: what really is stored."""
    from sqlalchemy import select

    from webhook_service.storage.engine import create_database_engine
    from webhook_service.storage.tables import messages

    engine = create_database_engine(settings.database_url)

    def read() -> list[dict]:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(select(messages).order_by(messages.c.id))]

    yield read
    engine.dispose()


@pytest.fixture
def log_lines():
    """The JSON lines the service renders while the test runs, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.addHandler(handler)

    def read() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    read.raw = stream.getvalue
    yield read
    root.removeHandler(handler)
