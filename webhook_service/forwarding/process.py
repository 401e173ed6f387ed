"""The forwarder process: one delivery loop per destination, metrics on their own port,
a clean stop on SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import threading
import uuid

import structlog

from webhook_service.config import Settings, resemblance_warnings
from webhook_service.forwarding.config import Destination
from webhook_service.forwarding.http_loop import HttpLoop
from webhook_service.forwarding.metrics import create_forwarder_metrics, serve_metrics
from webhook_service.forwarding.scheduler import DestinationWorker
from webhook_service.observability.logging import configure_logging
from webhook_service.storage.engine import Database
from webhook_service.storage.migrations import migrate

# After SIGTERM each destination finishes its attempts in flight within its timeout_seconds;
# this much more is allowed for writing their outcomes.
STOP_MARGIN_SECONDS = 10

logger = structlog.get_logger("webhook_service.forwarder")


def forwarder_id() -> str:
    """A name for this process in the leases it holds: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_forwarder(settings: Settings, destinations: list[Destination], metrics_host: str, metrics_port: int) -> None:
    """Forward until SIGTERM or SIGINT. Raises MigrationFailed when the database cannot be
    brought to the newest migration, OSError when the metrics port cannot be bound."""
    configure_logging(settings.log_level)
    revision = migrate(settings.database_url)
    metrics = create_forwarder_metrics([destination.name for destination in destinations])
    serve_metrics(metrics, metrics_host, metrics_port)
    database = Database(settings.database_url, pool_size=max(4, len(destinations) * 2))
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stopping.set())
    owner = forwarder_id()
    http_loop = HttpLoop()
    workers = [
        DestinationWorker(destination, database, metrics, owner, stopping, http_loop) for destination in destinations
    ]
    logger.info(
        "forwarder started",
        revision=revision,
        destinations=[destination.name for destination in destinations],
        metrics=f"{metrics_host}:{metrics_port}",
    )
    for line in resemblance_warnings(os.environ):
        logger.warning(line)
    for worker in workers:
        worker.start()
    try:
        while not stopping.is_set() and any(worker.is_alive() for worker in workers):
            stopping.wait(0.5)
    finally:
        stopping.set()
        for worker in workers:
            worker.join(timeout=worker.destination.timeout_seconds + STOP_MARGIN_SECONDS)
        http_loop.stop()
        database.dispose()
        logger.info("forwarder stopped")
