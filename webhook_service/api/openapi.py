"""The OpenAPI 3 document of the service, generated with apispec from the marshmallow schemas
that validate the requests (api/inputs.py) and serialize the answers
(api/outputs.py)."""

from __future__ import annotations

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from webhook_service.api.errors import RETRY_AFTER_SECONDS
from webhook_service.api.inputs import (
    FeedQuerySchema,
    MessagesQuerySchema,
    TimelineQuerySchema,
    WebhookMessageSchema,
)
from webhook_service.api.outputs import (
    ErrorSchema,
    FeedPageSchema,
    ForwardingSchema,
    MessagePageSchema,
    ReadinessSchema,
    StatsSchema,
    StatusSchema,
    TimelineSchema,
    ValidationErrorSchema,
)
from webhook_service.api.validation import Cursor, FeedPosition, QueryInteger, StrictQueryInteger

OPENAPI_VERSION = "3.0.3"

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "example": RETRY_AFTER_SECONDS},
    }
}


def _json(schema: str, description: str, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _errors(*statuses: int) -> dict:
    """The documented error answers of an operation, by status."""
    described = {
        400: "The body's framing is broken (a bad chunk, a body shorter than Content-Length).",
        401: "Not authenticated: no valid signature (POST /webhook) or bearer token (reads).",
        413: "The body is larger than MAX_BODY_BYTES (64 KiB by default).",
        422: "Invalid input: every problem listed.",
        429: "This worker holds as many waiting feed readers as it may (FEED_MAX_WAITERS): ask again after Retry-After.",
        503: "The database is unavailable, or no secret or key is configured: retry later.",
    }
    responses = {}
    for status in statuses:
        if status == 422:
            responses["422"] = _json("ValidationError", described[422])
        elif status in (429, 503):
            responses[str(status)] = _json("Error", described[status], _RETRY_AFTER)
        else:
            responses[str(status)] = _json("Error", described[status])
    return responses


def build_openapi_document(version: str) -> dict:
    """The whole document, as a dict ready to serialize."""
    marshmallow = MarshmallowPlugin()
    spec = APISpec(
        title="Webhook service",
        version=version,
        openapi_version=OPENAPI_VERSION,
        plugins=[marshmallow],
        info={
            "description": (
                "Receives signed JSON messages on POST /webhook, stores each exactly once (idempotent on "
                "message_id), and serves them back with filters, keyset pagination and statistics. Every error "
                "is JSON with a `detail` key."
            )
        },
    )
    marshmallow.map_to_openapi_type(QueryInteger, "integer", None)
    marshmallow.map_to_openapi_type(StrictQueryInteger, "integer", None)
    marshmallow.map_to_openapi_type(Cursor, "string", None)
    marshmallow.map_to_openapi_type(FeedPosition, "string", None)
    spec.components.security_scheme(
        "standardWebhooks",
        {
            "type": "apiKey",
            "in": "header",
            "name": "webhook-signature",
            "description": (
                "Standard Webhooks: `webhook-id`, `webhook-timestamp` (seconds since the epoch, within "
                "WEBHOOK_TOLERANCE_SECONDS of the server clock) and `webhook-signature`, space-separated "
                "`v1,<base64 HMAC-SHA256>` (or `v1a,<base64 ed25519>`) of `{webhook-id}.{webhook-timestamp}.{body}`."
            ),
        },
    )
    spec.components.security_scheme(
        "legacySignature",
        {
            "type": "apiKey",
            "in": "header",
            "name": "X-Signature",
            "description": "Hex HMAC-SHA256 of the raw body under the secret (a `sha256=` prefix is accepted).",
        },
    )
    spec.components.security_scheme(
        "bearerToken",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "One of API_TOKENS (reads) or METRICS_TOKEN (/metrics); needed only when those are set.",
        },
    )
    for name, schema in (
        ("WebhookMessage", WebhookMessageSchema),
        ("MessagePage", MessagePageSchema),
        ("FeedPage", FeedPageSchema),
        ("Stats", StatsSchema),
        ("Timeline", TimelineSchema),
        ("Forwarding", ForwardingSchema),
        ("Status", StatusSchema),
        ("Readiness", ReadinessSchema),
        ("Error", ErrorSchema),
        ("ValidationError", ValidationErrorSchema),
    ):
        spec.components.schema(name, schema=schema)
    reads_security = [{"bearerToken": []}]

    spec.path(
        path="/webhook",
        operations={
            "post": {
                "summary": "Deliver a message",
                "description": (
                    "The body is checked against its signature as raw bytes, then parsed as JSON whatever the "
                    "Content-Type says. A new message and a repeated message_id both answer 200; the first "
                    "delivery is stored, later ones change nothing. A 200 means the row is committed."
                ),
                "operationId": "deliver",
                "security": [{"standardWebhooks": []}, {"legacySignature": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": "WebhookMessage"}}},
                "responses": {
                    "200": _json("Status", "Stored, or stored already."),
                    **_errors(400, 401, 413, 422, 503),
                },
            }
        },
    )
    spec.path(
        path="/messages",
        operations={
            "get": {
                "summary": "List messages",
                "description": (
                    "In the order of the instant ts denotes, then message_id. Filters combine with AND; total "
                    "counts every match."
                ),
                "operationId": "listMessages",
                "security": reads_security,
                "parameters": [{"in": "query", "schema": MessagesQuerySchema}],
                "responses": {"200": _json("MessagePage", "One page."), **_errors(401, 422, 503)},
            }
        },
    )
    spec.path(
        path="/feed",
        operations={
            "get": {
                "summary": "Follow every message, in the order stored",
                "description": (
                    "Walking `next` from any position gives every message stored after it exactly once, in the "
                    "order the messages were stored (the same for every reader, on every worker and host), and "
                    "none stored before it; positions stay valid across restarts and purges. When nothing "
                    "follows and `wait` > 0, the request is held until a message is stored or `wait` ends. "
                    "Each worker holds at most FEED_MAX_WAITERS such requests; a reader that would wait beyond "
                    "them is answered 429 with Retry-After."
                ),
                "operationId": "feed",
                "security": reads_security,
                "parameters": [{"in": "query", "schema": FeedQuerySchema}],
                "responses": {
                    "200": _json("FeedPage", "What follows `after`, maybe nothing."),
                    **_errors(401, 422, 429, 503),
                },
            }
        },
    )
    spec.path(
        path="/stats",
        operations={
            "get": {
                "summary": "Statistics",
                "operationId": "stats",
                "security": reads_security,
                "responses": {"200": _json("Stats", "Totals, top senders, time range."), **_errors(401, 503)},
            }
        },
    )
    spec.path(
        path="/stats/timeline",
        operations={
            "get": {
                "summary": "Messages per hour or day",
                "description": (
                    "Messages counted by the hour or day (UTC) they were stored (`created_at`), for every bucket "
                    "from the one holding `since` to the last that starts before `until`, oldest first; buckets "
                    "without messages are left out. Read from counts kept with every insert and purge: as cheap "
                    "at ten million messages as at a hundred, and exact after purges. More than 1,000 buckets: 422."
                ),
                "operationId": "timeline",
                "security": reads_security,
                "parameters": [{"in": "query", "schema": TimelineQuerySchema}],
                "responses": {"200": _json("Timeline", "The buckets that hold messages."), **_errors(401, 422, 503)},
            }
        },
    )
    spec.path(
        path="/stats/forwarding",
        operations={
            "get": {
                "summary": "Forwarding destinations",
                "description": (
                    "Every destination a forwarder (`webhook-service forward`) has served on this database: its "
                    "lag, the messages waiting for a retry and its dead letters, read from the forwarder's tables."
                ),
                "operationId": "forwarding",
                "security": reads_security,
                "responses": {"200": _json("Forwarding", "One entry per destination."), **_errors(401, 503)},
            }
        },
    )
    spec.path(
        path="/console",
        operations={
            "get": {
                "summary": "The console",
                "description": (
                    "A read-only page for people: messages, the live feed, stats and charts. It holds no data and "
                    "needs no token; its script reads the endpoints of this document (with a token when reads need "
                    "one). Its script, styles and icon are under /console/static/."
                ),
                "operationId": "console",
                "responses": {
                    "200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
    )
    spec.path(
        path="/health/live",
        operations={
            "get": {
                "summary": "Liveness",
                "operationId": "live",
                "responses": {"200": _json("Status", "The process serves.")},
            }
        },
    )
    spec.path(
        path="/health/ready",
        operations={
            "get": {
                "summary": "Readiness",
                "description": (
                    "Ready when the database answers at the newest migration, takes a write, and a secret or key "
                    "is configured."
                ),
                "operationId": "ready",
                "responses": {
                    "200": _json("Readiness", "Ready."),
                    "503": _json("Readiness", "Not ready: the failing checks named.", _RETRY_AFTER),
                },
            }
        },
    )
    spec.path(
        path="/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "security": reads_security,
                "responses": {
                    "200": {
                        "description": "Prometheus text format 0.0.4, summed over every worker.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(401),
                },
            }
        },
    )
    spec.path(
        path="/openapi.json",
        operations={
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {
                    "200": {
                        "description": "The OpenAPI document; /docs shows it in Swagger UI.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    )
    return spec.to_dict()
