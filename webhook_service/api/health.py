"""Liveness and readiness probes."""

from __future__ import annotations

import structlog
from flask import Blueprint, jsonify
from sqlalchemy.exc import SQLAlchemyError

from webhook_service.context import (
    current_database,
    current_metrics,
    current_settings,
    current_verifier,
    expected_schema_revision,
)
from webhook_service.documents import readiness_document, status_document
from webhook_service.errors import RETRY_AFTER_SECONDS
from webhook_service.storage.engine import describe_database_error
from webhook_service.storage.migrations import database_revision
from webhook_service.storage.probe import rewrite_probe_row

bp = Blueprint("health", __name__)
# After a delivery's write fails, readiness stays down this long before its own probe write
# may declare the database writable again: a small probe can fit where a delivery did not.
WRITE_FAILURE_HOLD_SECONDS = 10.0
logger = structlog.get_logger(__name__)


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
        revision = database_revision(database.engine)
        if revision != expected_schema_revision():
            checks["schema"] = f"at {revision or 'no revision'}, expected {expected_schema_revision()}"
    except (SQLAlchemyError, OSError) as exc:
        current_metrics().count_database_error("readiness")
        logger.warning("readiness: database unavailable", error=describe_database_error(exc))
        checks["database"], checks["schema"] = "unavailable", "unknown"
    checks["writes"] = _writes_check(database) if checks["schema"] == "ok" else "unknown"
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        response = jsonify(readiness_document(checks, failing))
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return jsonify(readiness_document(checks, failing))


def _writes_check(database) -> str:
    failure = database.last_write_failure()
    if failure is not None and failure[1] < WRITE_FAILURE_HOLD_SECONDS:
        return f"failing: {failure[0]}"
    # No failure, or one old enough that a probe may say whether writes commit again (with
    # no deliveries arriving, nothing else would).
    try:
        with database.write_transaction(probe=True) as conn:
            rewrite_probe_row(conn, current_settings().max_body_bytes)
    except (SQLAlchemyError, OSError) as exc:
        reason = describe_database_error(exc)
        current_metrics().count_database_error("readiness")
        logger.warning("readiness: database takes no writes", error=reason)
        return f"failing: {reason}"
    return "ok"
