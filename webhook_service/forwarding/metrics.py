"""The forwarder's Prometheus metrics, served on its own port (one process: no multiprocess mode)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from webhook_service.forwarding.delivery import Result


@dataclass(frozen=True)
class ForwarderMetrics:
    """Attempts, in-flight requests, dead letters and lag, by destination."""

    registry: CollectorRegistry
    attempts: Counter
    in_flight: Gauge
    dead_letters: Gauge
    dead_lettered: Counter
    lag_seconds: Gauge
    attempt_seconds: Gauge
    skipped: Counter


def create_forwarder_metrics(destinations: list[str], registry: CollectorRegistry | None = None) -> ForwarderMetrics:
    """The metrics, every series of every destination present from the start (at zero)."""
    registry = registry or CollectorRegistry()
    metrics = ForwarderMetrics(
        registry=registry,
        attempts=Counter(
            "webhook_forward_attempts_total",
            "Delivery attempts by destination and outcome (delivered, retryable_status, refused, timeout, "
            "connection_error).",
            ["destination", "outcome"],
            registry=registry,
        ),
        in_flight=Gauge(
            "webhook_forward_in_flight",
            "Requests to the destination in flight now.",
            ["destination"],
            registry=registry,
        ),
        dead_letters=Gauge(
            "webhook_forward_dead_letters",
            "Dead letters of the destination stored now (webhook-service deliveries --failed lists them).",
            ["destination"],
            registry=registry,
        ),
        dead_lettered=Counter(
            "webhook_forward_dead_lettered_total",
            "Messages that became dead letters since the forwarder started.",
            ["destination"],
            registry=registry,
        ),
        lag_seconds=Gauge(
            "webhook_forward_lag_seconds",
            "Age of the oldest stored message the destination has not had yet (dead letters aside); 0 when none.",
            ["destination"],
            registry=registry,
        ),
        attempt_seconds=Gauge(
            "webhook_forward_last_attempt_seconds",
            "How long the destination's latest attempt took.",
            ["destination"],
            registry=registry,
        ),
        skipped=Counter(
            "webhook_forward_skipped_total",
            "Messages the destination's match left out: never attempted, owed or dead.",
            ["destination"],
            registry=registry,
        ),
    )
    for name in destinations:
        for result in Result:
            metrics.attempts.labels(name, result.value)
        for family in (
            metrics.in_flight,
            metrics.dead_letters,
            metrics.dead_lettered,
            metrics.lag_seconds,
            metrics.skipped,
        ):
            family.labels(name)
        metrics.attempt_seconds.labels(name)
    return metrics


def serve_metrics(metrics: ForwarderMetrics, host: str, port: int) -> None:
    """Serve GET /metrics on host:port from a daemon thread; raises OSError when the port is taken."""
    start_http_server(port, addr=host, registry=metrics.registry)
