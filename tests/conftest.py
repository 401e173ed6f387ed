"""Fixtures: a freshly migrated SQLite file per test, an app on it, and a signed-post helper."""

from __future__ import annotations

import io
import json
import logging

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from webhook_service import create_app
from webhook_service.config import Settings
from webhook_service.context import DATABASE_KEY
from webhook_service.observability.logging import json_formatter
from webhook_service.signatures import sign_legacy
from webhook_service.storage.migrations import upgrade_to_head

SECRET = "test-secret"


def make_message(**overrides) -> dict:
    """A valid webhook payload; keyword arguments replace or add fields."""
    payload = {
        "message_id": "m1",
        "from": "+919876543210",
        "to": "+14155550100",
        "ts": "2025-01-15T10:00:00Z",
        "text": "Hello",
    }
    payload.update(overrides)
    return payload


@pytest.fixture(autouse=True)
def _single_process_metrics(monkeypatch):
    # A multiprocess folder from the surrounding shell would change how /metrics collects.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)


@pytest.fixture
def database_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'messages.db'}"
    upgrade_to_head(url)
    return url


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
        raw = body if body is not None else json.dumps(payload).encode("utf-8")
        all_headers = {"X-Signature": sign_legacy(secret, raw), "Content-Type": "application/json"}
        all_headers.update(headers or {})
        return client.post("/webhook", data=raw, headers=all_headers)

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


def request_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line.get("event") == "request"]


def samples(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    values = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values, name, **labels) -> float:
    """One sample's value; a series that is not exported at all fails the test (KeyError)."""
    return values[(name, tuple(sorted(labels.items())))]
