"""One JSON error shape, `{"detail": ...}`, for every error the service answers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

from webhook_service.api.context import current_metrics
from webhook_service.api.outputs import error_document
from webhook_service.storage.engine import DATABASE_ERRORS, describe_database_error

logger = structlog.get_logger(__name__)

# How long a client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = 5
# How long a feed reader past the waiter limit should wait before asking again (429): short,
# since that is how late it sees new messages, and long enough that hundreds of readers
# asking again cost the workers little.
FEED_RETRY_AFTER_SECONDS = 2

# Short reason phrases, as FastAPI answers them, for the errors a client can cause.
_DETAILS = {
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


class RequestValidationError(Exception):
    """The request failed validation; `detail` is a FastAPI-style list of errors (422)."""

    def __init__(self, detail: list[dict]) -> None:
        super().__init__("request validation failed")
        self.detail = detail


class ServiceUnavailable(Exception):
    """A dependency (database, configuration) is not usable right now (503); `reason` says
    why for the logs and readiness, `detail` is what the client is told."""

    def __init__(self, detail: str, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason or detail


DATABASE_UNAVAILABLE = "database unavailable; retry later"


@contextmanager
def database_failures(operation: str, *, warning: bool = False) -> Iterator[None]:
    """Turn a database failure inside the block into one counted, logged ServiceUnavailable.

    `operation` (write, read, readiness) labels the metric and the log line; `warning`
    logs at WARNING where the caller reports the failure itself (readiness).
    """
    try:
        yield
    except DATABASE_ERRORS as exc:
        reason = describe_database_error(exc)
        current_metrics().count_database_error(operation)
        log = logger.warning if warning else logger.error
        log("database failed", operation=operation, error=reason)
        raise ServiceUnavailable(DATABASE_UNAVAILABLE, reason) from None


def json_response(document: dict, status: int = 200) -> Response:
    """`document` as JSON; a 503 tells the client when to retry."""
    response = jsonify(document)
    response.status_code = status
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def json_error(status: int, detail: object) -> Response:
    """A response with the service's error shape."""
    return json_response(error_document(detail), status)


def _handle_http_exception(error: HTTPException) -> Response:
    # Keep werkzeug's headers (Allow on 405, for one) but never its HTML body.
    response = error.get_response()
    detail = _DETAILS.get(error.code) or error.description or error.name
    body = json_error(error.code or 500, detail)
    for name, value in response.headers.items():
        if name.lower() not in ("content-type", "content-length"):
            body.headers[name] = value
    return body


def _handle_internal_error(_error: InternalServerError) -> Response:
    # Flask has already logged the exception with its traceback; the client learns nothing more.
    return json_error(500, _DETAILS[500])


def _handle_validation_error(error: RequestValidationError) -> Response:
    return json_error(422, error.detail)


def _handle_unavailable(error: ServiceUnavailable) -> Response:
    return json_error(503, error.detail)


def register_error_handlers(app: Flask) -> None:
    """Answer every HTTP error, and every unhandled exception, as JSON."""
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(InternalServerError, _handle_internal_error)
    app.register_error_handler(RequestValidationError, _handle_validation_error)
    app.register_error_handler(ServiceUnavailable, _handle_unavailable)
