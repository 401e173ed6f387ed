"""Access to the current application's settings and database from inside a request."""

from __future__ import annotations

from flask import current_app

from webhook_service.config import Settings
from webhook_service.observability.metrics import ServiceMetrics
from webhook_service.signatures import Verifier
from webhook_service.storage.commit_signal import FeedWaiters
from webhook_service.storage.engine import Database
from webhook_service.storage.group_commit import GroupCommit
from webhook_service.storage.messages import NewMessage

SETTINGS_KEY = "webhook_service.settings"
COUNT_FOLDER_KEY = "webhook_service.count_folder"
RETENTION_KEY = "webhook_service.retention"
DATABASE_KEY = "webhook_service.database"
SCHEMA_HEAD_KEY = "webhook_service.schema_head"
MESSAGE_WRITER_KEY = "webhook_service.message_writer"
VERIFIER_KEY = "webhook_service.verifier"
METRICS_KEY = "webhook_service.metrics"
FEED_WAITERS_KEY = "webhook_service.feed_waiters"


def current_settings() -> Settings:
    """The Settings the current app was created with."""
    return current_app.extensions[SETTINGS_KEY]


def current_database() -> Database:
    """The Database of the current app (one engine per process)."""
    return current_app.extensions[DATABASE_KEY]


def expected_schema_revision() -> str:
    """The newest migration revision, which the database must be at to be ready."""
    return current_app.extensions[SCHEMA_HEAD_KEY]


def current_message_writer() -> GroupCommit[NewMessage, bool]:
    """Stores deliveries, committing those that arrive together in one transaction."""
    return current_app.extensions[MESSAGE_WRITER_KEY]


def current_verifier() -> Verifier:
    """Checks delivery signatures against the configured secrets and public keys."""
    return current_app.extensions[VERIFIER_KEY]


def current_metrics() -> ServiceMetrics:
    """The current app's metrics."""
    return current_app.extensions[METRICS_KEY]


def current_feed_waiters() -> FeedWaiters:
    """The long-polls of GET /feed this process holds."""
    return current_app.extensions[FEED_WAITERS_KEY]
