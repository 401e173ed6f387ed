"""The latest write outcome, shared by the worker processes of one server."""

import os
import time

import pytest

from tests.support.messages import make_message
from webhook_service.api import health
from webhook_service.storage.write_health import WRITE_HEALTH, WriteHealth, database_key


def test_a_failure_recorded_in_a_forked_worker_is_seen_by_the_others():
    shared = WriteHealth()
    pid = os.fork()
    if pid == 0:  # the "worker": record and leave at once
        shared.record_failure(7, "OperationalError: database or disk is full")
        os._exit(0)
    os.waitpid(pid, 0)
    failure = shared.last_failure(7)
    reason, age = failure.reason, failure.seconds_ago
    assert reason == "OperationalError: database or disk is full" and 0 <= age < 5
    shared.record_success(7, began_at=time.monotonic())
    assert shared.last_failure(7) is None


def test_databases_are_kept_apart():
    shared = WriteHealth()
    shared.record_failure(1, "locked")
    assert shared.last_failure(2) is None
    shared.record_success(2, began_at=time.monotonic())
    assert shared.last_failure(1).reason == "locked"


def test_a_failure_read_while_a_writer_is_in_the_middle_of_an_update_is_still_seen():
    shared = WriteHealth()
    key = database_key("sqlite:///a.db")
    shared.record_failure(key, "disk full")
    # As a writer leaves it while it updates the record (an odd sequence number), for
    # longer than the optimistic reads take: a reader must not take it for "no failure".
    sequence = int.from_bytes(shared._memory[:8], "little")
    shared._memory[:8] = (sequence + 1).to_bytes(8, "little")
    failure = shared.last_failure(key)
    assert failure is not None and failure.reason == "disk full"


def test_a_write_that_began_before_a_failure_does_not_clear_it():
    # A readiness probe waits for the write lock behind a delivery that then fails; the
    # probe's own commit must not make the service look writable.
    shared = WriteHealth()
    probe_began = time.monotonic()
    shared.record_failure(3, "OperationalError: database or disk is full")
    shared.record_success(3, began_at=probe_began)
    assert shared.last_failure(3).reason == "OperationalError: database or disk is full"
    shared.record_success(3, began_at=time.monotonic())  # a write that began after it
    assert shared.last_failure(3) is None


@pytest.fixture
def failed_delivery_write(settings):
    key = database_key(settings.database_url)
    WRITE_HEALTH.record_failure(key, "OperationalError: database or disk is full")
    yield
    WRITE_HEALTH.record_success(key, began_at=time.monotonic())


def test_readiness_stays_down_after_a_failed_delivery_until_a_write_commits(client, signed_post, failed_delivery_write):
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["writes"] == "failing: OperationalError: database or disk is full"
    assert signed_post(make_message()).status_code == 200
    assert client.get("/health/ready").status_code == 200


def test_without_deliveries_an_old_failure_is_settled_by_the_probe(client, monkeypatch, failed_delivery_write):
    monkeypatch.setattr(health, "WRITE_FAILURE_HOLD_SECONDS", 0.0)
    assert client.get("/health/ready").status_code == 200
    monkeypatch.setattr(health, "WRITE_FAILURE_HOLD_SECONDS", 10.0)
    assert client.get("/health/ready").status_code == 200


def test_a_probe_clears_only_what_failed_before_it_read_the_state(database_url):
    from webhook_service.storage.engine import Database

    database = Database(database_url)
    try:
        decided_at = time.monotonic()  # readiness reads: no failure
        WRITE_HEALTH.record_failure(database_key(database_url), "a delivery failed meanwhile")
        with database.write_transaction(probe=True, decided_at=decided_at):
            pass  # the probe's own write commits
        assert database.last_write_failure() is not None
        with database.write_transaction(probe=True, decided_at=time.monotonic()):
            pass
        assert database.last_write_failure() is None
    finally:
        database.dispose()
