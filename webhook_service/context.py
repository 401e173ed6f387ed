"""Access to the current application's settings and database from inside a request."""

from __future__ import annotations

from flask import current_app

from webhook_service.config import Settings
from webhook_service.storage.engine import Database

SETTINGS_KEY = "webhook_service.settings"
DATABASE_KEY = "webhook_service.database"
SCHEMA_HEAD_KEY = "webhook_service.schema_head"


def current_settings() -> Settings:
    """The Settings the current app was created with."""
    return current_app.extensions[SETTINGS_KEY]


def current_database() -> Database:
    """The Database of the current app (one engine per process)."""
    return current_app.extensions[DATABASE_KEY]


def expected_schema_revision() -> str:
    """The newest migration revision, which the database must be at to be ready."""
    return current_app.extensions[SCHEMA_HEAD_KEY]
