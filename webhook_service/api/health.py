"""Liveness and readiness probes."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify

from webhook_service.api.context import current_database, current_settings, current_verifier, expected_schema_revision
from webhook_service.api.errors import ServiceUnavailable, database_failures, json_response
from webhook_service.api.outputs import readiness_document, status_document
from webhook_service.storage.migrations import database_revision
from webhook_service.storage.probe import rewrite_probe_row

bp = Blueprint("health", __name__)
# After a delivery's write fails, readiness stays down this long before its own probe write
# may declare the database writable again: a small probe can fit where a delivery did not.
WRITE_FAILURE_HOLD_SECONDS = 10.0


@bp.get("/health/live")
def live():
    """200 whenever the process serves."""
    return jsonify(status_document("ok"))


@bp.get("/health/ready")
def ready():
    """200 when the database answers at the newest migration, takes a write, and a secret or
    key is set; else 503 naming what fails."""
    checks = {"database": "ok", "schema": "ok", "writes": "ok", "secret": "ok"}
    if not current_verifier().configured:
        checks["secret"] = "neither WEBHOOK_SECRET nor WEBHOOK_PUBLIC_KEYS is set"
    database = current_database()
    try:
        with database_failures("readiness", warning=True):
            revision = database_revision(database.engine)
        if revision != expected_schema_revision():
            checks["schema"] = f"at {revision or 'no revision'}, expected {expected_schema_revision()}"
    except ServiceUnavailable:
        checks["database"], checks["schema"] = "unavailable", "unknown"
    checks["writes"] = _writes_check(database) if checks["schema"] == "ok" else "unknown"
    failing = [name for name, state in checks.items() if state != "ok"]
    return json_response(readiness_document(checks, failing), 503 if failing else 200)


def _writes_check(database) -> str:
    # A delivery may fail between this read and the probe's write: the probe's commit then
    # clears only what failed before this read.
    decided_at = time.monotonic()
    failure = database.last_write_failure()
    if failure is not None and failure.seconds_ago < WRITE_FAILURE_HOLD_SECONDS:
        return f"failing: {failure.reason}"
    # No failure, or one old enough that a probe may say whether writes commit again (with
    # no deliveries arriving, nothing else would).
    try:
        with (
            database_failures("readiness", warning=True),
            database.write_transaction(probe=True, decided_at=decided_at) as conn,
        ):
            rewrite_probe_row(conn, current_settings().max_body_bytes)
    except ServiceUnavailable as unavailable:
        return f"failing: {unavailable.reason}"
    return "ok"
