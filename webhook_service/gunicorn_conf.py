"""The server's gunicorn settings and hooks: JSON logs, multiprocess metrics, migrations once
in the master, the head-first worker. `webhook-service serve` starts gunicorn with them
(`-c python:webhook_service.gunicorn_conf`), and the checkout's gunicorn.conf.py is this
module, for those who run gunicorn themselves. Command-line flags override them.

Importing this module sets the process up, before anything imports the metrics library:
the metrics folder, the umask, and the variables of the .env file the environment lacks.
"""

import os
import shutil
import signal
import sys
import tempfile

# prometheus_client reads this when first imported, so it is set before anything imports it
# (importing the package imports nothing else). The folder is this server's own, removed at
# its exit, unless the environment names one.
_METRICS_DIR = os.path.join(tempfile.gettempdir(), f"webhook-service-metrics-{os.getpid()}")
_OWN_METRICS_DIR = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", _METRICS_DIR) == _METRICS_DIR

# Files the service creates (the SQLite database and its journals, archives) are its own:
# readable and writable by the user it runs as only.
os.umask(0o077)

from webhook_service.config import (
    ConfigError,
    ServerSettings,
    Settings,
    apply_env_file,
    resemblance_warnings,
    shown_database_url,
)
from webhook_service.observability.gunicorn import (
    HeadFirstThreadWorker,
    answer_protocol_errors_as_json,
)
from webhook_service.observability.logging import logging_config

# Memory every worker shares, mapped here in the master so that the forked workers inherit
# it: readiness sees a write failure of any worker, and a held feed reader a commit of any.
from webhook_service.storage.commit_signal import COMMITS  # noqa: F401
from webhook_service.storage.write_health import WRITE_HEALTH  # noqa: F401

__all__ = [
    "accesslog",
    "bind",
    "child_exit",
    "control_socket_disable",
    "forwarded_allow_ips",
    "graceful_timeout",
    "keepalive",
    "limit_request_field_size",
    "limit_request_fields",
    "limit_request_line",
    "logconfig_dict",
    "logger_class",
    "on_exit",
    "on_starting",
    "post_worker_init",
    "threads",
    "timeout",
    "worker_class",
    "workers",
]

# The environment wins; a .env file fills what it lacks (as for every command).
_ENV_FILE = os.path.abspath(os.environ.get("WEBHOOK_SERVICE_ENV_FILE") or ".env")
try:
    _from_env_file = apply_env_file(_ENV_FILE) if os.path.isfile(_ENV_FILE) else None
    _server = ServerSettings.from_env()
    _settings = Settings.from_env()
    _config_error = None
except ConfigError as error:
    _from_env_file = None
    _server, _settings, _config_error = ServerSettings(), None, error

bind = [f"{_server.host}:{_server.port}"]
workers = _server.workers or ((os.cpu_count() or 1) + 1)
# Threads let one worker hold several keep-alive connections (nginx upstream keep-alive);
# each thread takes its own pooled database connection. A connection gets a thread only once
# its request head has arrived, and a head still incomplete after BODY_READ_TIMEOUT_SECONDS is
# answered 408: stalled clients hold no thread.
worker_class = "webhook_service.observability.gunicorn.HeadFirstThreadWorker"
if _settings is not None:
    HeadFirstThreadWorker.head_timeout = float(_settings.body_read_timeout_seconds)
threads = 16
keepalive = 5
timeout = 30
graceful_timeout = 20
control_socket_disable = True
accesslog = None
logger_class = "webhook_service.observability.gunicorn.ApplicationLogsRequests"
logconfig_dict = logging_config(_settings.log_level if _settings else "INFO")
# Requests gunicorn cannot parse get the service's JSON error shape, not an HTML page.
answer_protocol_errors_as_json()
# The proxies whose X-Forwarded-* gunicorn believes: the same list the app uses (FORWARDED_ALLOW_IPS).
forwarded_allow_ips = ",".join(str(network) for network in (_settings or Settings()).trusted_proxies)
# Request line and header limits: part of the service's bounds on client input.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190


def on_starting(server):
    """Validate settings, reset the metrics folder and migrate, once, before any worker forks."""
    import structlog

    from webhook_service.observability.logging import configure_logging
    from webhook_service.storage.migrations import MigrationFailed, migrate

    # gunicorn has set up the handlers from logconfig_dict; the service's own lines go
    # through structlog under its own logger name.
    configure_logging(_settings.log_level if _settings else "INFO")
    log = structlog.get_logger("webhook_service.server")
    if _config_error is not None:
        log.error(f"invalid configuration: {_config_error}")
        sys.exit(1)
    try:
        revision = migrate(_settings.database_url)
    except MigrationFailed as error:
        log.error(str(error))
        sys.exit(1)
    # Made only once the start can succeed: a refused start leaves nothing behind in /tmp.
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir, exist_ok=True)
    log.info(f"database at schema revision {revision}", database=shown_database_url(_settings.database_url))
    if _from_env_file is not None:
        log.info(f"read {_ENV_FILE} for the settings the environment lacks", env_file_set=sorted(_from_env_file))
    for line in resemblance_warnings(os.environ):
        log.warning(line)
    if not (_settings.webhook_secrets or _settings.public_keys):
        log.warning("neither WEBHOOK_SECRET nor WEBHOOK_PUBLIC_KEYS is set: POST /webhook answers 503 until one is")
    if not _settings.api_tokens:
        log.warning(
            "API_TOKENS is not set: GET /messages, /stats and /feed and the console are open to anyone who can connect"
        )


def post_worker_init(worker):
    """Start the worker's retention runner (where RETENTION_DAYS is set). On SIGTERM, answer
    the held feed long-polls at once, so that they do not hold the worker's graceful stop for
    up to their `wait`, and stop retention after its batch under way."""
    from webhook_service.api.context import RETENTION_KEY
    from webhook_service.storage.commit_signal import stop_all_waiters

    retention = getattr(worker.wsgi, "extensions", {}).get(RETENTION_KEY)
    if retention is not None:
        retention.start()

    stop_serving = worker.handle_exit

    def handle_exit(sig, frame):
        stop_all_waiters()
        if retention is not None:
            retention.close(timeout=0)
        stop_serving(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)


def child_exit(server, worker):
    """Fold a dead worker's metrics into the archives, so that scrapes stay exact and fast."""
    from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

    from webhook_service.observability.multiprocess import fold_dead_worker

    GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)
    try:
        fold_dead_worker(os.environ["PROMETHEUS_MULTIPROC_DIR"], worker.pid)
    except OSError as error:
        # Its files stay and are still summed: scrapes stay exact, only slower. The master goes on.
        server.log.error("could not fold the metrics of worker %s: %s", worker.pid, error)


def on_exit(server):
    """Remove the metrics folder this configuration created, and the database's helper
    files that no process holds any more (SQLite's writer lock)."""
    from webhook_service.storage.dialects import dialect_for_url

    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    if _settings is not None:
        dialect_for_url(_settings.database_url).remove_idle_files()
