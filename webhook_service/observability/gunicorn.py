"""How gunicorn itself speaks and listens: no access lines of its own, JSON for the errors it
answers before the application sees a request (a malformed request line or headers), and
worker threads that are given a request only once its head has arrived."""

from __future__ import annotations

import json
import re
import socket
import time
from http import HTTPStatus

from gunicorn import util
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import _DEFER, ThreadWorker

# A request head whose end has not arrived this long after its first byte is refused (408).
DEFAULT_HEAD_TIMEOUT_SECONDS = 10.0
# A head this large is handed to gunicorn's parser as it is, which applies its own limits.
_HEAD_BUFFER_LIMIT = 64 * 1024


_INVALID_REQUEST = "Invalid request from ip="
_QUERY = re.compile(r"\?[^\s'\"]*")
# What gunicorn quotes of a malformed header: kept up to the end of a plausible header name.
_QUOTED_HEADER = re.compile(r"([Hh]eader(?: name)?: ')([!#-'*+.0-9A-Z^-z|~-]{0,64})[^']*(')")


class ApplicationLogsRequests(Logger):
    """gunicorn.glogging.Logger without access lines: the application writes a richer JSON
    line per request, and gunicorn would otherwise format one per request for nothing. Its
    warning about a request it cannot parse keeps the path and the header name, never a query
    string or a header's value (search terms and tokens stay out of the log)."""

    def access(self, resp, req, environ, request_time) -> None:
        return None

    def warning(self, msg, *args, **kwargs) -> None:
        if isinstance(msg, str) and msg.startswith(_INVALID_REQUEST):
            msg = redact_invalid_request(msg)
        super().warning(msg, *args, **kwargs)


def redact_invalid_request(message: str) -> str:
    """gunicorn's invalid-request warning without query strings or header values."""
    return _QUOTED_HEADER.sub(r"\1\2…\3", _QUERY.sub("?…", message))


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


class HeadFirstThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, except that a connection gets a thread only once the head of
    its next request (request line and headers, up to the blank line) has arrived.

    gunicorn waits (without a thread) for a connection's first bytes, then parses the head in
    a thread on a blocking socket: a client that sends half a head and stops held that thread
    for good, and a few dozen such clients held every thread. Here each thread reads what has
    arrived without waiting and gives the connection back to the worker's poller while the
    head is incomplete, so a stalled or trickling head costs no thread. A head not complete
    `head_timeout` seconds after its first byte is answered 408 and closed; one that stops
    arriving is closed by gunicorn after its keep-alive time, like an idle connection.
    """

    head_timeout = DEFAULT_HEAD_TIMEOUT_SECONDS

    def handle(self, conn):
        if not _head_arrived(conn, self.head_timeout):
            if getattr(conn, "head_expired", False):
                _answer_request_timeout(conn.sock)
                return False
            return _DEFER
        return super().handle(conn)

    def murder_pending(self):
        """gunicorn's: close connections that waited in the poller past their keep-alive time;
        and also those whose head started arriving more than `head_timeout` ago, with a 408."""
        now = time.monotonic()
        for conn in list(self.pending_conns):
            started = getattr(conn, "head_started", None)
            head_late = started is not None and now - started > self.head_timeout
            if conn.timeout > now and not head_late:
                continue
            self.pending_conns.remove(conn)
            try:
                self.poller.unregister(conn.sock)
            except (OSError, KeyError, ValueError):
                pass  # already unregistered
            self.nr_conns -= 1
            if started is not None:
                _answer_request_timeout(conn.sock)
            conn.close()


def _head_arrived(conn, timeout: float) -> bool:
    """Read what has arrived (never waiting); True once the head is complete, the client has
    closed, or the head is too large to wait for, with the bytes handed to gunicorn's parser."""
    if conn.parser is not None and conn.parser.unreader.buf.getvalue():
        return True  # bytes gunicorn read ahead: its parser takes it from there
    buffered = getattr(conn, "head_bytes", b"")
    try:
        data = conn.sock.recv(_HEAD_BUFFER_LIMIT, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        data = None
    except OSError:
        return True  # a reset or closed socket: gunicorn's own handling says so
    if data is not None:
        buffered += data
    if data == b"" or b"\r\n\r\n" in buffered or b"\n\n" in buffered or len(buffered) >= _HEAD_BUFFER_LIMIT:
        conn.head_bytes, conn.head_started = b"", None
        if buffered:
            conn.init()
            conn.parser.unreader.unread(buffered)
            conn.data_ready = True
        return True
    now = time.monotonic()
    if buffered and getattr(conn, "head_started", None) is None:
        conn.head_started = now
    conn.head_bytes = buffered
    conn.head_expired = buffered != b"" and now - conn.head_started > timeout
    return False


def _answer_request_timeout(sock) -> None:
    try:
        write_json_error(sock, 408, "Request Timeout", "")
    except OSError:
        pass
