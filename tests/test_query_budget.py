"""Every read has a time budget: past it, a clear 422 instead of a worker busy for seconds."""

import time

import pytest
from sqlalchemy import text

from tests.support.servers import wait_until
from webhook_service.config import Settings
from webhook_service.storage.dialects import sqlite as sqlite_dialect
from webhook_service.storage.dialects.budget import WATCHDOG
from webhook_service.storage.engine import Database, QueryBudgetExceeded

SLOW_COUNT = text(
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000000) SELECT count(*) FROM n"
)


def test_a_statement_past_its_budget_is_stopped(database_url):
    database = Database(database_url)
    try:
        started = time.monotonic()
        with pytest.raises(QueryBudgetExceeded), database.read_transaction(budget_seconds=0.05) as conn:
            conn.execute(SLOW_COUNT).scalar_one()
        assert time.monotonic() - started < 2
        # The same pooled connection serves the next request without a budget of its own.
        with database.read_transaction() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        database.dispose()


@pytest.mark.postgresql_only
def test_the_budget_is_the_requests_not_each_statements(database_url):
    # Two statements of 0.6 s each, under a budget of 1 s: each alone fits, together they do
    # not. (On SQLite the deadline is checked as statements run, whichever statement it is.)
    slow = text("SELECT pg_sleep(0.6)")
    database = Database(database_url)
    try:
        with database.read_transaction(budget_seconds=1.0) as conn:
            conn.execute(slow)
        with pytest.raises(QueryBudgetExceeded), database.read_transaction(budget_seconds=1.0) as conn:
            conn.execute(slow)
            conn.execute(slow)  # stopped when the request's second run out, 0.4 s in
    finally:
        database.dispose()


@pytest.mark.sqlite_only
def test_a_read_past_its_budget_answers_422_naming_the_budget(make_app, database_url, monkeypatch, log_lines):
    # Every few instructions the deadline is checked, and the deadline has already passed.
    monkeypatch.setattr(sqlite_dialect, "PROGRESS_INSTRUCTIONS", 10)
    client = make_app(Settings(webhook_secrets=("s",), database_url=database_url, query_budget_ms=0)).test_client()
    for path in ("/messages?q=ab", "/stats"):
        response = client.get(path)
        assert response.status_code == 422
        [error] = response.get_json()["detail"]
        assert error["type"] == "query_too_expensive" and error["loc"] == ["query"]
        assert "0 ms" in error["msg"]
    assert client.get("/health/live").status_code == 200
    stopped = [line for line in log_lines() if line.get("event") == "read stopped at its time budget"]
    assert stopped and all(line["budget_ms"] == 0 and line["stopped_after_ms"] >= 0 for line in stopped)


@pytest.mark.sqlite_only
def test_a_statement_the_progress_handler_never_looks_at_is_stopped_at_its_deadline(database_url, monkeypatch):
    # The handler is called every 20,000 instructions; here never within the statement: the
    # watchdog alone stops it (without it the count runs to its end, 50,000,000 rows on).
    monkeypatch.setattr(sqlite_dialect, "PROGRESS_INSTRUCTIONS", 2**31 - 1)
    database = Database(database_url)
    try:
        with pytest.raises(QueryBudgetExceeded) as stopped, database.read_transaction(budget_seconds=0.1) as conn:
            conn.execute(SLOW_COUNT).scalar_one()
        assert stopped.value.seconds >= 0.1
        # Released with its read: the next read on the pooled connection is not interrupted.
        with database.read_transaction(budget_seconds=0.05) as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        time.sleep(0.1)
        with database.read_transaction(budget_seconds=5) as conn:
            assert conn.execute(text("SELECT count(*) FROM messages")).scalar_one() == 0
    finally:
        database.dispose()


def test_the_watchdog_interrupts_at_the_deadline_only_what_is_still_watched():
    calls = []
    ticket = WATCHDOG.watch(time.monotonic() + 0.05, lambda: calls.append("released"))
    WATCHDOG.release(ticket)
    WATCHDOG.watch(time.monotonic() + 0.05, lambda: calls.append("due"))
    WATCHDOG.watch(time.monotonic() + 3600, lambda: calls.append("later"))
    assert wait_until(lambda: calls == ["due"], timeout=5)
    time.sleep(0.1)
    assert calls == ["due"]
