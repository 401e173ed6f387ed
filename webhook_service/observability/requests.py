"""The request pipeline's observability seam: request ids, one log line and metrics per request.

Views record what they learn about a webhook delivery with `record_webhook()`; the line
and the counters are written once, after the response is built.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import time
from collections.abc import Sequence

import structlog
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from webhook_service.observability.metrics import UNMATCHED_PATH, ServiceMetrics, WebhookResult

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_LOGGED_ID_CHARS = 256
QUIET_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})

logger = structlog.get_logger("webhook_service.request")


def record_webhook(
    result: WebhookResult, message_id: str | None = None, duplicate: bool = False, reason: str | None = None
) -> None:
    """Note the outcome of this POST /webhook (and why it was refused) for its log line and metrics."""
    g.webhook_result = result
    g.webhook_duplicate = duplicate
    if message_id is not None:
        g.webhook_message_id = message_id[:MAX_LOGGED_ID_CHARS]
    if reason is not None:
        note_refusal_reason(reason)


def note_message_id(message_id: object) -> None:
    """Remember the delivery's message_id for the log line, once the body is parsed."""
    if isinstance(message_id, str):
        g.webhook_message_id = message_id[:MAX_LOGGED_ID_CHARS]


def note_webhook_id(webhook_id: str | None) -> None:
    """Remember a Standard Webhooks delivery's webhook-id for the log line."""
    if webhook_id:
        g.webhook_id = webhook_id[:MAX_LOGGED_ID_CHARS]


def note_refusal_reason(reason: str) -> None:
    """Say in the log line why the request was refused (never with the secret or token)."""
    g.refusal_reason = reason


class _RequestIds:
    """New request ids: 32 hex digits, a random prefix per process and a counter after it.

    Unique without a system call per request (uuid4 reads the kernel's random source each
    time); a forked worker draws a prefix of its own, at the fork.
    """

    def __init__(self) -> None:
        self.restart()
        os.register_at_fork(after_in_child=self.restart)

    def restart(self) -> None:
        self._prefix = os.urandom(10).hex()
        self._counter = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


_request_ids = _RequestIds()


def incoming_request_id(value: str | None) -> str:
    """The caller's X-Request-ID when it is a sane token, else a new one."""
    if value and REQUEST_ID_PATTERN.fullmatch(value):
        return value
    return _request_ids.new()


def client_address(
    remote_addr: str | None,
    forwarded_for: str | None,
    trusted_proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str | None:
    """The real client address: the nearest untrusted hop of X-Forwarded-For, read only when
    the peer itself is a trusted proxy; otherwise the peer address."""
    if not remote_addr or not forwarded_for or not _is_trusted(remote_addr, trusted_proxies):
        return remote_addr
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted_proxies):
            return hop if _is_address(hop) else remote_addr
    return hops[0] if hops and _is_address(hops[0]) else remote_addr


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted_proxies) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_proxies)


def _route_template(app: Flask, response: Response) -> str:
    """The matched route's template; for a 405 the route the URL belongs to (matching
    stopped at the method), and one fixed label for URLs no route serves."""
    if request.url_rule is not None:
        return request.url_rule.rule
    if response.status_code == 405 and response.allow:
        try:
            rule, _arguments = app.url_map.bind_to_environ(request.environ).match(
                method=next(iter(response.allow)), return_rule=True
            )
        except HTTPException:
            return UNMATCHED_PATH
        return rule.rule
    return UNMATCHED_PATH


def init_request_observability(app: Flask, metrics: ServiceMetrics, trusted_proxies) -> None:
    """Bind a request id for each request, and log and count it once it is answered."""

    @app.before_request
    def start_request() -> None:
        structlog.contextvars.clear_contextvars()
        g.request_started = time.perf_counter()
        g.request_id = incoming_request_id(request.headers.get(REQUEST_ID_HEADER))
        structlog.contextvars.bind_contextvars(request_id=g.request_id)

    @app.after_request
    def finish_request(response: Response) -> Response:
        started = g.get("request_started")
        seconds = time.perf_counter() - started if started is not None else 0.0
        request_id = g.get("request_id") or incoming_request_id(None)
        response.headers[REQUEST_ID_HEADER] = request_id
        path_label = _route_template(app, response)
        metrics.observe_request(request.method, path_label, response.status_code, seconds)

        fields = {
            "request_id": request_id,
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "latency_ms": round(seconds * 1000.0, 3),
            "client": client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), trusted_proxies),
        }
        result = g.get("webhook_result")
        if result is not None:
            metrics.count_webhook(result)
            fields["result"] = result.value
            fields["dup"] = bool(g.get("webhook_duplicate", False))
            message_id = g.get("webhook_message_id")
            if message_id is not None:
                fields["message_id"] = message_id
            webhook_id = g.get("webhook_id")
            if webhook_id is not None:
                fields["webhook_id"] = webhook_id
        reason = g.get("refusal_reason")
        if reason is not None:
            fields["reason"] = reason
        if response.status_code >= 500:
            logger.error("request", **fields)
        elif response.status_code in (400, 401, 403, 413):
            logger.warning("request", **fields)
        elif path_label in QUIET_PATHS:
            # Probes and scrapes come every few seconds: at INFO they would bury the traffic.
            logger.debug("request", **fields)
        else:
            logger.info("request", **fields)
        return response

    @app.teardown_request
    def forget_request(_error: BaseException | None) -> None:
        structlog.contextvars.clear_contextvars()
