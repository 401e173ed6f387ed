"""The JSON documents the service hands out, as marshmallow schemas.

The views, the error handlers and the command line serialize through these schemas, and
the OpenAPI document (api/openapi.py) is generated from them: what the service
answers and what its document says come from one definition.
"""

from __future__ import annotations

from marshmallow import Schema, fields

from webhook_service.storage.feed import FeedPage, encode_position
from webhook_service.storage.forwarding import DeliveryState, DestinationSummary
from webhook_service.storage.messages import MessagePage, MessageStats, message_document
from webhook_service.timestamps import epoch_from_iso


class MessageSchema(Schema):
    """A stored message."""

    message_id = fields.String(required=True, metadata={"description": "The sender's id; the first delivery wins."})
    from_ = fields.String(
        data_key="from", attribute="sender", required=True, metadata={"description": "Sender, E.164."}
    )
    to = fields.String(attribute="recipient", required=True, metadata={"description": "Recipient, E.164."})
    ts = fields.String(required=True, metadata={"description": "The message time exactly as the sender wrote it."})
    text = fields.String(required=True, allow_none=True, metadata={"description": "null when none was sent."})
    created_at = fields.String(
        required=True, metadata={"description": "Ingestion time, UTC ISO-8601 with microseconds and Z."}
    )


class MessagePageSchema(Schema):
    """One page of GET /messages."""

    data = fields.List(fields.Nested(MessageSchema), attribute="items", required=True)
    total = fields.Integer(required=True, metadata={"description": "Messages matching the filters, on every page."})
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Pass as `cursor` for the next page (same filters); null on the last page."},
    )


class FeedPageSchema(Schema):
    """One answer of GET /feed."""

    data = fields.List(
        fields.Nested(MessageSchema),
        attribute="items",
        required=True,
        metadata={"description": "Messages in the order they were stored; empty when none followed in time."},
    )
    next = fields.String(
        required=True,
        metadata={"description": "Pass as `after` to read on (opaque, never null)."},
    )


class SenderCountSchema(Schema):
    """How many messages one sender sent."""

    from_ = fields.String(data_key="from", attribute="sender", required=True)
    count = fields.Integer(required=True)


class StatsSchema(Schema):
    """GET /stats."""

    total_messages = fields.Integer(required=True)
    senders_count = fields.Integer(required=True)
    messages_per_sender = fields.List(
        fields.Nested(SenderCountSchema),
        attribute="top_senders",
        required=True,
        metadata={"description": "The top 10 senders by count descending, ties by `from` ascending."},
    )
    first_message_ts = fields.String(
        required=True, allow_none=True, metadata={"description": "ts of the earliest instant, as written."}
    )
    last_message_ts = fields.String(
        required=True, allow_none=True, metadata={"description": "ts of the latest instant, as written."}
    )


class TimelinePointSchema(Schema):
    """Messages stored in one bucket."""

    start = fields.String(
        required=True, metadata={"description": "The bucket's first instant, UTC.", "example": "2025-01-15T10:00:00Z"}
    )
    count = fields.Integer(required=True, metadata={"minimum": 1})


class TimelineSchema(Schema):
    """GET /stats/timeline."""

    bucket = fields.String(required=True, metadata={"enum": ["day", "hour"]})
    points = fields.List(
        fields.Nested(TimelinePointSchema),
        required=True,
        metadata={"description": "Oldest first; buckets without messages are left out; at most 1,000."},
    )


class OwedDeliverySchema(Schema):
    """A delivery still owed to a destination: waiting for its next attempt, or dead."""

    message_id = fields.String(
        required=True, allow_none=True, metadata={"description": "null when the message was removed since."}
    )
    attempts = fields.Integer(required=True, metadata={"description": "Attempts since it was queued or replayed."})
    last_status = fields.Integer(
        required=True, allow_none=True, metadata={"description": "The HTTP status of the last attempt, if any."}
    )
    last_error = fields.String(
        required=True, allow_none=True, metadata={"description": "What went wrong in the last attempt, in one line."}
    )
    last_attempt_at = fields.String(required=True, allow_none=True, metadata={"example": "2025-01-15T10:00:03Z"})
    next_attempt_at = fields.String(
        required=True, allow_none=True, metadata={"description": "Not tried again before this; null for a dead letter."}
    )


class DestinationSchema(Schema):
    """Where one forwarding destination stands."""

    name = fields.String(required=True, metadata={"example": "billing"})
    position = fields.String(
        required=True, metadata={"description": "Feed position up to which it has had or is owed every message."}
    )
    lag_seconds = fields.Float(
        required=True,
        metadata={"description": "Age of the oldest stored message it has not had, dead letters aside; 0 when none."},
    )
    pending = fields.Integer(required=True, metadata={"description": "Messages waiting for a retry or in flight."})
    dead_letters = fields.Integer(required=True)
    latest_dead_letters = fields.List(
        fields.Nested(OwedDeliverySchema),
        required=True,
        metadata={"description": "The 20 dead letters that died last, newest first (deliveries --failed lists all)."},
    )
    waiting = fields.List(
        fields.Nested(OwedDeliverySchema),
        required=True,
        metadata={
            "description": "The 20 pending deliveries due soonest (in flight, or waiting for a retry or their turn)."
        },
    )


class ForwardingSchema(Schema):
    """GET /stats/forwarding."""

    destinations = fields.List(
        fields.Nested(DestinationSchema),
        required=True,
        metadata={"description": "Every destination a forwarder has served on this database, by name."},
    )


class StatusSchema(Schema):
    """A plain status answer."""

    status = fields.String(required=True, metadata={"example": "ok"})


class ReadinessSchema(Schema):
    """GET /health/ready: `ready`, or `not_ready` naming the failing checks."""

    status = fields.String(required=True, metadata={"enum": ["ready", "not_ready"]})
    detail = fields.String(metadata={"description": "Present when not ready: which checks fail."})
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        required=True,
        metadata={"description": "database, schema, writes, secret: `ok` or what is wrong."},
    )


class ErrorSchema(Schema):
    """Every error but validation errors."""

    detail = fields.String(required=True, metadata={"example": "invalid signature"})


class ValidationErrorItemSchema(Schema):
    """One invalid input, FastAPI style."""

    loc = fields.List(
        fields.Raw(),
        required=True,
        metadata={"description": 'Where: ["body", field], ["query", parameter], or ["body", byte offset].'},
    )
    msg = fields.String(required=True)
    type = fields.String(required=True, metadata={"example": "value_error"})
    ctx = fields.Dict(metadata={"description": "More about the error, when there is more."})


class ValidationErrorSchema(Schema):
    """422: every invalid input listed."""

    detail = fields.List(fields.Nested(ValidationErrorItemSchema), required=True)


_stats = StatsSchema()
_timeline = TimelineSchema()
_forwarding = ForwardingSchema()
_status = StatusSchema()
_readiness = ReadinessSchema()
_error = ErrorSchema()
_validation_error = ValidationErrorSchema()


def page_document(page: MessagePage, limit: int, offset: int, next_cursor: str | None) -> dict:
    """The GET /messages document (MessagePageSchema's)."""
    return {
        "data": [message_document(message) for message in page.items],
        "total": page.total,
        "limit": limit,
        "offset": offset,
        "next_cursor": next_cursor,
    }


def feed_document(page: FeedPage) -> dict:
    """The GET /feed document (FeedPageSchema's)."""
    return {"data": [message_document(message) for message in page.items], "next": encode_position(page.next_position)}


def stats_document(stats: MessageStats) -> dict:
    """The /stats document."""
    return _stats.dump(stats)


def timeline_document(bucket: str, points: list[tuple[str, int]]) -> dict:
    """The GET /stats/timeline document."""
    return _timeline.dump({"bucket": bucket, "points": [{"start": start, "count": count} for start, count in points]})


def forwarding_document(summaries: list[DestinationSummary], now: float) -> dict:
    """The GET /stats/forwarding document, lags measured at `now` (epoch seconds)."""
    return _forwarding.dump(
        {
            "destinations": [
                {
                    "name": summary.name,
                    "position": encode_position(summary.position),
                    "lag_seconds": 0.0
                    if summary.oldest_undelivered_at is None
                    else max(0.0, round(now - epoch_from_iso(summary.oldest_undelivered_at), 3)),
                    "pending": summary.pending,
                    "dead_letters": summary.dead_letters,
                    "latest_dead_letters": [_owed_delivery(item) for item in summary.latest_dead_letters],
                    "waiting": [_owed_delivery(item) for item in summary.waiting],
                }
                for summary in summaries
            ]
        }
    )


def _owed_delivery(item: DeliveryState) -> dict:
    return {
        "message_id": item.message_id,
        "attempts": item.attempts,
        "last_status": item.last_status,
        "last_error": item.last_error,
        "last_attempt_at": item.last_attempt_at,
        "next_attempt_at": item.next_attempt_at,
    }


def status_document(status: str) -> dict:
    """`{"status": ...}`: a stored delivery, a live process."""
    return _status.dump({"status": status})


def readiness_document(checks: dict[str, str], failing: list[str]) -> dict:
    """GET /health/ready's document for these checks."""
    if failing:
        return _readiness.dump({"status": "not_ready", "detail": f"not ready: {', '.join(failing)}", "checks": checks})
    return _readiness.dump({"status": "ready", "checks": checks})


def error_document(detail: object) -> dict:
    """The error shape: `detail` a string, or for validation errors a list of them."""
    if isinstance(detail, list):
        return _validation_error.dump({"detail": detail})
    return _error.dump({"detail": detail})
