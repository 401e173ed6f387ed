"""POST /webhook: verify, validate, store once, answer."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from flask import Blueprint, current_app, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from webhook_service.api.context import current_message_writer, current_settings, current_verifier
from webhook_service.api.errors import RequestValidationError, ServiceUnavailable, database_failures, json_error
from webhook_service.api.inputs import load_webhook_message, parse_json_object
from webhook_service.api.outputs import status_document
from webhook_service.observability.metrics import WebhookResult
from webhook_service.observability.requests import note_message_id, note_webhook_id, record_webhook
from webhook_service.signatures import Outcome

bp = Blueprint("webhook", __name__)

try:  # The server's own errors for a body it cannot read (a bad chunk size, for one).
    from gunicorn.http.errors import ParseException as _ServerParseError
except ImportError:  # pragma: no cover - served by another WSGI server
    _ServerParseError = ClientDisconnected

# The same answer for new and duplicate deliveries, serialized once.
ACCEPTED_BODY = json.dumps(status_document("ok"), separators=(",", ":")) + "\n"
# Reading the body raises these when the client framed it badly or stopped sending it:
# gunicorn's parse errors, its NoMoreData (an OSError), werkzeug's ClientDisconnected.
_BODY_FRAMING_ERRORS = (_ServerParseError, ClientDisconnected, OSError, ValueError)


class MalformedBody(Exception):
    """The body ended before its declared length, or its chunked framing is broken (400)."""


@contextmanager
def _socket_timeout(sock, seconds: float) -> Iterator[None]:
    # gunicorn's worker threads read the body from a blocking socket with no timeout: a
    # client that stops sending would hold the thread for good. Bounded here, it gets a 400.
    if sock is None:
        yield
        return
    previous = sock.gettimeout()
    sock.settimeout(seconds)
    try:
        yield
    except BaseException:
        # Where this body ends is unknown, so nothing more is read from this connection:
        # the answer still goes out, then gunicorn finds the end of input and closes it
        # (rather than wait, thread held, for the rest of a body that never comes).
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RD)
        raise
    finally:
        sock.settimeout(previous)


def read_body(limit: int, timeout_seconds: float) -> bytes:
    """The raw body, refused with 413 past `limit` bytes without reading further.

    A declared Content-Length is checked before reading. A chunked body has none; behind
    gunicorn werkzeug's own limit lets it through silently truncated, so it is read from
    the server's stream to at most limit + 1 bytes. Raises MalformedBody for a body that
    is shorter than declared or badly chunked, or stalls for `timeout_seconds`: it must
    never be taken as complete.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise RequestEntityTooLarge(f"request body exceeds {limit} bytes")
    try:
        with _socket_timeout(request.environ.get("gunicorn.socket"), timeout_seconds):
            if declared is not None:
                # Straight from the server's input: the length is checked above and below.
                body = request.environ["wsgi.input"].read(declared)
            elif request.environ.get("wsgi.input_terminated"):
                body = request.input_stream.read(limit + 1)
            else:
                body = b""
    except _BODY_FRAMING_ERRORS as error:
        raise MalformedBody(f"request body could not be read: {type(error).__name__}") from None
    if declared is not None and len(body) != declared:
        raise MalformedBody(f"request body ended after {len(body)} of {declared} declared bytes")
    if len(body) > limit:
        raise RequestEntityTooLarge(f"request body exceeds {limit} bytes")
    return body


@bp.post("/webhook")
def receive_webhook():
    """Store a signed message once; 200 for new and duplicate deliveries alike."""
    try:
        settings = current_settings()
        body = read_body(settings.max_body_bytes, settings.body_read_timeout_seconds)
    except RequestEntityTooLarge:
        record_webhook(WebhookResult.PAYLOAD_TOO_LARGE)
        raise
    except MalformedBody as error:
        record_webhook(WebhookResult.BAD_REQUEST, reason=str(error))
        return json_error(400, "malformed request body")
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
        with database_failures("write"):
            inserted = current_message_writer().submit(message)
    except ServiceUnavailable:
        record_webhook(WebhookResult.DB_ERROR, message.message_id)
        raise

    result = WebhookResult.SUCCESS if inserted else WebhookResult.DUPLICATE
    record_webhook(result, message.message_id, duplicate=not inserted)
    return current_app.response_class(ACCEPTED_BODY, mimetype="application/json")
