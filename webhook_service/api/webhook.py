"""POST /webhook: verify, validate, store once, answer."""

from __future__ import annotations

import json
import time

import structlog
from flask import Blueprint, current_app, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from webhook_service.api.database import describe_database_error
from webhook_service.context import current_message_writer, current_settings, current_verifier
from webhook_service.errors import RequestValidationError, ServiceUnavailable, json_error
from webhook_service.observability.metrics import WebhookResult
from webhook_service.observability.requests import note_message_id, note_webhook_id, record_webhook
from webhook_service.schemas import load_webhook_message, parse_json_object
from webhook_service.signatures import Outcome

bp = Blueprint("webhook", __name__)
logger = structlog.get_logger(__name__)

# The same answer for new and duplicate deliveries, serialized once.
ACCEPTED_BODY = json.dumps({"status": "ok"}, separators=(",", ":")) + "\n"


def read_body(limit: int) -> bytes:
    """The raw body, refused with 413 past `limit` bytes without reading further.

    A declared Content-Length is checked before reading. A chunked body has none; behind
    gunicorn werkzeug's own limit lets it through silently truncated, so it is read from
    the server's stream to at most limit + 1 bytes.
    """
    if request.content_length is not None:
        if request.content_length > limit:
            raise RequestEntityTooLarge(f"request body exceeds {limit} bytes")
        return request.stream.read()
    if not request.environ.get("wsgi.input_terminated"):
        return b""
    body = request.input_stream.read(limit + 1)
    if len(body) > limit:
        raise RequestEntityTooLarge(f"request body exceeds {limit} bytes")
    return body


@bp.post("/webhook")
def receive_webhook():
    """Store a signed message once; 200 for new and duplicate deliveries alike."""
    try:
        body = read_body(current_settings().max_body_bytes)
    except RequestEntityTooLarge:
        record_webhook(WebhookResult.PAYLOAD_TOO_LARGE)
        raise
    verifier = current_verifier()
    if not verifier.configured:
        record_webhook(WebhookResult.NOT_CONFIGURED)
        raise ServiceUnavailable("webhook secret is not configured")
    verification = verifier.verify(request.headers, body, time.time())
    note_webhook_id(verification.webhook_id)
    if verification.outcome is Outcome.STALE_TIMESTAMP:
        record_webhook(WebhookResult.STALE_TIMESTAMP, reason=verification.outcome)
        return json_error(401, "timestamp outside tolerance")
    if not verification.verified:
        record_webhook(WebhookResult.INVALID_SIGNATURE, reason=verification.outcome)
        return json_error(401, "invalid signature")

    try:
        document = parse_json_object(body)
        note_message_id(document.get("message_id"))
        message = load_webhook_message(document)
    except RequestValidationError:
        record_webhook(WebhookResult.VALIDATION_ERROR)
        raise

    try:
        inserted = current_message_writer().submit(message)
    except (SQLAlchemyError, OSError) as exc:
        # OSError: the database's folder or its writer lock file cannot be opened.
        record_webhook(WebhookResult.DB_ERROR, message.message_id)
        logger.error("message not stored", error=describe_database_error(exc))
        raise ServiceUnavailable("database unavailable; retry later") from None

    result = WebhookResult.SUCCESS if inserted else WebhookResult.DUPLICATE
    record_webhook(result, message.message_id, duplicate=not inserted)
    return current_app.response_class(ACCEPTED_BODY, mimetype="application/json")
