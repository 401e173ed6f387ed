"""Retention run by the service itself: gunicorn alone, no cron, no other process."""

from __future__ import annotations

import time

import pytest

from tests.support.database import store_at
from tests.support.metrics import value
from tests.support.servers import Gunicorn, request, scrape, wait_until
from webhook_service.storage.engine import Database
from webhook_service.storage.messages import NewMessage
from webhook_service.storage.migrations import upgrade_to_head

pytestmark = pytest.mark.e2e

DAY = 86_400


def message(message_id: str, text: str = "hi") -> NewMessage:
    return NewMessage(message_id, "+1555", "+2", "2025-01-01T00:00:00Z", text)


@pytest.mark.sqlite_only  # the storage tests run retention on both databases
def test_the_service_removes_old_messages_within_a_minute_of_start(tmp_path, server_env, monkeypatch):
    upgrade_to_head(server_env["DATABASE_URL"])
    database = Database(server_env["DATABASE_URL"])
    try:
        store_at(database, monkeypatch, time.time() - 9 * DAY, [message("old-1", text="secret words")])
        store_at(database, monkeypatch, time.time() - 8 * DAY, [message("old-2")])
        store_at(database, monkeypatch, time.time() - 3600, [message("recent")])
    finally:
        database.dispose()
    server = Gunicorn(workdir=tmp_path, env={**server_env, "RETENTION_DAYS": "7"}, workers=2).start()
    try:
        assert request(server.port, "GET", "/stats").json()["total_messages"] == 3
        assert wait_until(lambda: request(server.port, "GET", "/stats").json()["total_messages"] == 1, timeout=60)
        messages = request(server.port, "GET", "/messages").json()["data"]
        assert [item["message_id"] for item in messages] == ["recent"]
        # The worker that ran counts its run once it has looked again at what the run left; the
        # other worker may look in between, so the count is what the test waits for.
        assert wait_until(lambda: value(scrape(server.port), "webhook_retention_removed_total") == 2, timeout=10)
        metrics = scrape(server.port)
        assert value(metrics, "webhook_oldest_message_age_seconds") < DAY
        assert value(metrics, "webhook_retention_runs_total", outcome="completed") == 1
        assert value(metrics, "webhook_retention_last_completed_timestamp_seconds") > time.time() - 180
    finally:
        server.stop()
    log = server.output()
    assert '"event": "retention_run"' in log and "secret words" not in log
