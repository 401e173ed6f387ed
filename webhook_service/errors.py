"""One JSON error shape, `{"detail": ...}`, for every error the service answers."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

from webhook_service.documents import error_document

logger = logging.getLogger(__name__)

# How long a client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = 5

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
    """A dependency (database, configuration) is not usable right now (503)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def json_error(status: int, detail: object) -> Response:
    """A response with the service's error shape; a 503 tells the client when to retry."""
    response = jsonify(error_document(detail))
    response.status_code = status
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


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
