"""POST /webhook: verify, validate, store once, answer."""

from __future__ import annotations

import json

import structlog
from flask import Blueprint, current_app, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from webhook_service import signatures
from webhook_service.api.database import describe_database_error
from webhook_service.context import current_message_writer, current_settings
from webhook_service.errors import RequestValidationError, ServiceUnavailable, json_error
from webhook_service.observability.requests import note_message_id, record_webhook
from webhook_service.schemas import load_webhook_message, parse_json_object

bp = Blueprint("webhook", __name__)
logger = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Signature"
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
    settings = current_settings()
    try:
        body = read_body(settings.max_body_bytes)
    except RequestEntityTooLarge:
        record_webhook("payload_too_large")
        raise
    secret = settings.webhook_secret
    if secret is None:
        record_webhook("not_configured")
        raise ServiceUnavailable("webhook secret is not configured")
    if not signatures.verify(secret, body, request.headers.get(SIGNATURE_HEADER)):
        record_webhook("invalid_signature")
        return json_error(401, "invalid signature")

    try:
        document = parse_json_object(body)
        note_message_id(document.get("message_id"))
        message = load_webhook_message(document)
    except RequestValidationError:
        record_webhook("validation_error")
        raise

    try:
        inserted = current_message_writer().submit(message)
    except (SQLAlchemyError, OSError) as exc:
        # OSError: the database's folder or its writer lock file cannot be opened.
        record_webhook("db_error", message.message_id)
        logger.error("message not stored", error=describe_database_error(exc))
        raise ServiceUnavailable("database unavailable; retry later") from None

    record_webhook("success" if inserted else "duplicate", message.message_id, duplicate=not inserted)
    return current_app.response_class(ACCEPTED_BODY, mimetype="application/json")
