"""How gunicorn itself speaks: no access lines of its own, and JSON for the errors it answers
before the application sees a request (a malformed request line or headers)."""

from __future__ import annotations

import json
from http import HTTPStatus

from gunicorn import util
from gunicorn.glogging import Logger


class ApplicationLogsRequests(Logger):
    """gunicorn.glogging.Logger without access lines: the application writes a richer JSON
    line per request, and gunicorn would otherwise format one per request for nothing."""

    def access(self, resp, req, environ, request_time) -> None:
        return None


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error with the service's error shape instead of an HTML page.

    `mesg` quotes the malformed input, so only the reason is sent back. The reason phrase is
    the status's own: gunicorn passes "Bad Request" with a 501 for an unknown transfer coding.
    """
    try:
        reason = HTTPStatus(int(status_int)).phrase
    except ValueError:
        pass
    body = json.dumps({"detail": reason}).encode() + b"\n"
    head = (
        f"HTTP/1.1 {int(status_int)} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    util.write_nonblock(sock, head + body)


def answer_protocol_errors_as_json() -> None:
    """Make gunicorn answer the HTTP errors it raises itself as JSON (workers call it via
    `util.write_error`)."""
    util.write_error = write_json_error
