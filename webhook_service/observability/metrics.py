"""Prometheus metrics. Under gunicorn they run in multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set by gunicorn.conf.py), so every scrape sums all workers whichever one answers it."""

from __future__ import annotations

import contextlib
import glob
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from flask import Flask, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_flask_exporter import PrometheusMetrics

from webhook_service.observability.multiprocess import folder_lock

UNMATCHED_PATH = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
LATENCY_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
COMMIT_BUCKETS_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
DATABASE_OPERATIONS = ("write", "read", "readiness")
# `curl -s /metrics | head` shows these first; the other families follow in their own order.
LEADING_FAMILIES = ("http_requests", "webhook_requests")


class WebhookResult(StrEnum):
    """The outcome of one POST /webhook: the `result` of its log line and metric label."""

    SUCCESS = "success"
    DUPLICATE = "duplicate"
    INVALID_SIGNATURE = "invalid_signature"
    STALE_TIMESTAMP = "stale_timestamp"
    VALIDATION_ERROR = "validation_error"
    DB_ERROR = "db_error"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_CONFIGURED = "not_configured"
    BAD_REQUEST = "bad_request"


@dataclass(frozen=True)
class ServiceMetrics:
    """The service's own metrics, registered in one registry."""

    registry: CollectorRegistry
    http_requests: Counter
    webhook_requests: Counter
    request_duration_seconds: Histogram
    request_latency_ms: Histogram
    batch_rows: Histogram
    commit_seconds: Histogram
    database_errors: Counter
    build_info: Gauge
    feed_long_polls: Gauge
    feed_held_back_seconds: Gauge
    retention_removed: Counter
    retention_archived: Counter
    retention_deliveries_ended: Counter
    retention_runs: Counter
    retention_last_completed: Gauge
    oldest_message_age: Gauge
    _child_cache: dict = field(default_factory=dict)

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency under bounded labels."""
        method_label = method if method in KNOWN_METHODS else OTHER_METHOD
        counter, seconds_histogram, milliseconds_histogram = self._children(method_label, path, status)
        counter.inc()
        seconds_histogram.observe(seconds)
        milliseconds_histogram.observe(seconds * 1000.0)

    def _children(self, method: str, path: str, status: int) -> tuple:
        # labels() takes a lock and builds a key on every call; the label sets are bounded,
        # so each one's children are looked up once.
        key = (method, path, status)
        children = self._child_cache.get(key)
        if children is None:
            children = (
                self.http_requests.labels(method, path, str(status)),
                self.request_duration_seconds.labels(method, path),
                self.request_latency_ms.labels(method, path),
            )
            self._child_cache[key] = children
        return children

    def count_webhook(self, result: str) -> None:
        """Count one POST /webhook outcome."""
        child = self._child_cache.get(result)
        if child is None:
            child = self._child_cache[result] = self.webhook_requests.labels(result)
        child.inc()

    def observe_commit(self, rows: int, seconds: float) -> None:
        """One group-commit transaction: how many deliveries it held and how long it took."""
        self.batch_rows.observe(rows)
        self.commit_seconds.observe(seconds)

    def count_database_error(self, operation: str) -> None:
        """A database operation (write, read, readiness) failed."""
        self.database_errors.labels(operation).inc()


RETENTION_OUTCOMES = ("completed", "stopped", "failed")


def create_metrics(registry: CollectorRegistry, version: str) -> ServiceMetrics:
    """Define the metrics in `registry`; each app gets its own, so tests stay independent."""
    metrics = ServiceMetrics(
        registry=registry,
        http_requests=Counter(
            "http_requests_total",
            "HTTP requests answered, by method, route template and status.",
            ["method", "path", "status"],
            registry=registry,
        ),
        webhook_requests=Counter("webhook_requests_total", "POST /webhook outcomes.", ["result"], registry=registry),
        request_duration_seconds=Histogram(
            "http_request_duration_seconds",
            "Time to answer a request, in seconds.",
            ["method", "path"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=registry,
        ),
        request_latency_ms=Histogram(
            "request_latency_ms",
            "Time to answer a request, in milliseconds (the same observations as http_request_duration_seconds).",
            ["method", "path"],
            buckets=tuple(bound * 1000.0 for bound in LATENCY_BUCKETS_SECONDS),
            registry=registry,
        ),
        batch_rows=Histogram(
            "webhook_group_commit_rows",
            "Deliveries written by one group-commit transaction.",
            buckets=BATCH_ROWS_BUCKETS,
            registry=registry,
        ),
        commit_seconds=Histogram(
            "webhook_group_commit_duration_seconds",
            "Time one group-commit transaction took, from waiting for the write lock to the fsynced commit.",
            buckets=COMMIT_BUCKETS_SECONDS,
            registry=registry,
        ),
        database_errors=Counter(
            "webhook_database_errors_total",
            "Database operations that failed, by operation (write, read, readiness).",
            ["operation"],
            registry=registry,
        ),
        build_info=Gauge(
            "webhook_service_build_info",
            "Always 1; the labels say which version runs on which Python.",
            ["version", "python"],
            registry=registry,
            # Dead workers' values vanish with them, so restarts leave no files behind.
            multiprocess_mode="livemax",
        ),
        feed_long_polls=Gauge(
            "webhook_feed_long_polls",
            "GET /feed requests held now, waiting for a message (at most FEED_MAX_WAITERS per worker).",
            registry=registry,
            multiprocess_mode="livesum",
        ),
        feed_held_back_seconds=Gauge(
            "webhook_feed_held_back_seconds",
            "How long the oldest stored message not yet in the feed has waited for a transaction begun "
            "before it to end (PostgreSQL; measured every second by each writing worker).",
            registry=registry,
            multiprocess_mode="livemax",
        ),
        retention_removed=Counter(
            "webhook_retention_removed_total",
            "Messages retention removed: stored longer ago than RETENTION_DAYS.",
            registry=registry,
        ),
        retention_archived=Counter(
            "webhook_retention_archived_total",
            "Messages retention wrote to ARCHIVE_URL (read back and checked) before removing them.",
            registry=registry,
        ),
        retention_deliveries_ended=Counter(
            "webhook_retention_deliveries_ended_total",
            "Deliveries still owed (waiting or dead letters) that ended because retention removed their message.",
            registry=registry,
        ),
        retention_runs=Counter(
            "webhook_retention_runs_total",
            "Retention runs this service's processes made, by outcome: completed, stopped (the process was "
            "stopping), failed (the database failed; tried again within minutes).",
            ["outcome"],
            registry=registry,
        ),
        retention_last_completed=Gauge(
            "webhook_retention_last_completed_timestamp_seconds",
            "When a retention run last completed on this database, by any host (epoch seconds; 0 before the "
            "first). Set where RETENTION_DAYS is.",
            registry=registry,
            multiprocess_mode="livemax",
        ),
        oldest_message_age=Gauge(
            "webhook_oldest_message_age_seconds",
            "How long ago the oldest stored message was stored (0 when none is). Set where RETENTION_DAYS is.",
            registry=registry,
            # Each worker sets it when it looks; the latest look is the truest (the largest
            # would be the stalest: a worker that looked before a run removed the oldest).
            multiprocess_mode="livemostrecent",
        ),
    )
    for outcome in RETENTION_OUTCOMES:
        metrics.retention_runs.labels(outcome)
    for result in WebhookResult:
        metrics.webhook_requests.labels(result.value)
    for operation in DATABASE_OPERATIONS:
        metrics.database_errors.labels(operation)
    metrics.build_info.labels(version, platform.python_version()).set(1)
    return metrics


def init_metrics(
    app: Flask,
    version: str,
    registry: CollectorRegistry | None = None,
    guard: Callable[[], Response | None] | None = None,
) -> ServiceMetrics:
    """Create the app's metrics and serve them at GET /metrics in the text format 0.0.4.

    `guard` may refuse a scrape (METRICS_TOKEN) by returning the response to send instead.
    """
    # No `*_created` series: multiprocess mode has none, so without workers there are none too.
    disable_created_metrics()
    registry = registry or CollectorRegistry()
    metrics = create_metrics(registry, version)
    # The exporter collects from every worker's files when PROMETHEUS_MULTIPROC_DIR is set,
    # and from `registry` otherwise. Its default metrics are off: ours carry the path label.
    exporter = PrometheusMetrics(app, path=None, export_defaults=False, registry=registry)

    def serve_metrics() -> Response:
        refusal = guard() if guard is not None else None
        if refusal is not None:
            return refusal
        # Always the classic text format, whatever the scraper's Accept asks for.
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            with folder_lock(directory, exclusive=False):
                families = _LeadingFamiliesFirst(_every_workers_families(directory))
        else:
            families = _LeadingFamiliesFirst(exporter.registry.collect())
        return Response(generate_latest(families), status=200, content_type=CONTENT_TYPE_PLAIN_0_0_4)

    app.add_url_rule("/metrics", endpoint="metrics", view_func=serve_metrics, methods=["GET"])
    return metrics


def _every_workers_families(directory: str) -> list:
    """Every worker's files, summed: the same for whichever worker answers the scrape.

    A file of zero bytes is one a worker has just created and not yet sized (prometheus_client
    opens it, then truncates it to its first size): it holds no value yet, and reading its
    header would fail the scrape, so it is passed over.
    """
    files = []
    for path in glob.glob(os.path.join(directory, "*.db")):
        with contextlib.suppress(FileNotFoundError):
            if os.path.getsize(path) > 0:
                files.append(path)
    return list(MultiProcessCollector.merge(files, accumulate=True))


class _LeadingFamiliesFirst:
    """A collector that hands out already collected families, the leading ones first."""

    def __init__(self, families) -> None:
        collected = list(families)
        leading = [f for name in LEADING_FAMILIES for f in collected if f.name == name]
        self._families = leading + [f for f in collected if f.name not in LEADING_FAMILIES]

    def collect(self):
        return self._families
