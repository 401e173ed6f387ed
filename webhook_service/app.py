"""The Flask application: create_app() assembles blueprints, storage, metrics and the background threads."""

from __future__ import annotations

import os
import time

from flask import Flask, Response, jsonify, request
from prometheus_client import CollectorRegistry

from webhook_service.api import blueprints, read_blueprints
from webhook_service.api.access import bearer_guard
from webhook_service.api.context import (
    COUNT_FOLDER_KEY,
    DATABASE_KEY,
    FEED_WAITERS_KEY,
    MESSAGE_WRITER_KEY,
    METRICS_KEY,
    RETENTION_KEY,
    SCHEMA_HEAD_KEY,
    SETTINGS_KEY,
    VERIFIER_KEY,
)
from webhook_service.api.errors import register_error_handlers
from webhook_service.archive.stores import archive_store
from webhook_service.config import Settings
from webhook_service.observability.logging import configure_logging
from webhook_service.observability.metrics import init_metrics
from webhook_service.observability.requests import init_request_observability
from webhook_service.storage.commit_signal import COMMITS, FeedWaiters
from webhook_service.storage.engine import Database
from webhook_service.storage.feed import held_back_seconds, newest_position
from webhook_service.storage.group_commit import GroupCommit
from webhook_service.storage.messages import insert_messages_if_new
from webhook_service.storage.migrations import head_revision
from webhook_service.storage.read_model import CountFolder
from webhook_service.storage.retention import RetentionRunner
from webhook_service.timestamps import epoch_from_iso
from webhook_service.version import __version__

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, *, metrics_registry: CollectorRegistry | None = None) -> Flask:
    """Assemble the application. Settings come from the environment unless given.

    Raises webhook_service.config.ConfigError when the environment is malformed. No
    connection is opened here, so a forked worker never inherits one.
    """
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)

    # No static folder: the service serves no files, so no /static route.
    app = Flask(__name__, static_folder=None)
    app.make_default_options_response = _options_response
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions[SETTINGS_KEY] = settings
    app.extensions[VERIFIER_KEY] = settings.verifier()
    database = Database(settings.database_url, pool_size=settings.database_pool_size)
    app.extensions[DATABASE_KEY] = database
    app.extensions[SCHEMA_HEAD_KEY] = head_revision()

    register_error_handlers(app)
    metrics_token = (settings.metrics_token,) if settings.metrics_token else ()
    metrics = init_metrics(app, __version__, metrics_registry, guard=bearer_guard(metrics_token))
    app.extensions[METRICS_KEY] = metrics

    # Where counts are deferred, each process that writes folds them in every second.
    # The feed's wait behind running transactions is measured there too.
    def measure_feed(conn) -> None:
        metrics.feed_held_back_seconds.set(held_back_seconds(conn))

    folder = None
    if database.dialect.deferred is not None:
        folder = CountFolder(lambda: database.engine, after_fold=measure_feed)
    app.extensions[COUNT_FOLDER_KEY] = folder
    app.extensions[RETENTION_KEY] = _retention_runner(settings, database, metrics)

    def committed(rows: int, seconds: float) -> None:
        metrics.observe_commit(rows, seconds)
        COMMITS.bump()  # held feed readers look again
        if folder is not None:
            folder.start(os.getpid())

    app.extensions[MESSAGE_WRITER_KEY] = GroupCommit(
        database.write_transaction, insert_messages_if_new, on_commit=committed
    )

    def newest_in_database() -> int:
        with database.read_transaction() as conn:
            return newest_position(conn)

    app.extensions[FEED_WAITERS_KEY] = FeedWaiters(
        settings.feed_max_waiters,
        newest_position=newest_in_database if database.dialect.shared_by_hosts else None,
        on_waiting=metrics.feed_long_polls.set,
    )
    init_request_observability(app, metrics, settings.trusted_proxies)
    read_guard = bearer_guard(settings.api_tokens)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    for blueprint in read_blueprints:
        app.before_request_funcs.setdefault(blueprint.name, []).append(read_guard)
    return app


def _retention_runner(settings: Settings, database: Database, metrics) -> RetentionRunner | None:
    """Where RETENTION_DAYS is set, the runner each worker starts once forked (gunicorn.conf.py)."""
    if settings.retention_days is None:
        return None

    def observe(state, oldest: str | None) -> None:
        completed = None if state is None else state.last_completed_at
        metrics.retention_last_completed.set(completed or 0)
        metrics.oldest_message_age.set(0 if oldest is None else max(0.0, time.time() - epoch_from_iso(oldest)))

    def ran(result) -> None:
        if result is None:
            metrics.retention_runs.labels("failed").inc()
            return
        metrics.retention_runs.labels(result.outcome).inc()
        metrics.retention_removed.inc(result.removed)
        metrics.retention_archived.inc(result.archived)
        metrics.retention_deliveries_ended.inc(result.deliveries_ended)

    archive = None if settings.archive_url is None else archive_store(settings.archive_url)
    return RetentionRunner(database, settings.retention_days, observe=observe, ran=ran, archive=archive)


def _options_response() -> Response:
    # Flask's automatic OPTIONS answer is an empty text/html page: say the same in JSON.
    methods = sorted(request.url_rule.methods) if request.url_rule is not None else ["OPTIONS"]
    response = jsonify({"allow": methods})
    response.allow.update(methods)
    return response
