"""A consumer of forwarded messages for the tests: a small HTTP server on loopback that
verifies every Standard Webhooks signature with the reference library and answers as the
test tells it to (per message), counting what it receives and how much was in flight."""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from tests.support.servers import free_port


@dataclass
class Received:
    """One request the consumer got."""

    webhook_id: str
    message: dict
    at: float
    verified: bool
    answered: int
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Consumer:
    """Answers by `answer(message) -> Answer` (200 by default); `stop()` takes it down,
    `start()` brings it back on the same port."""

    def __init__(
        self,
        secret: str,
        answer: Callable[[dict], Answer] | None = None,
        tls: tuple[Path, Path] | None = None,
        client_ca: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.tls = tls  # (certificate, key): serve https
        self.client_ca = client_ca  # with tls: require a client certificate issued by this CA
        self.secret = secret
        self.answer = answer or (lambda _message: Answer())
        self.received: list[Received] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.concurrent_same_id = 0
        self._in_flight_ids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hooks"

    def start(self) -> Consumer:
        consumer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                consumer._handle(self)

            def log_message(self, *_args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
            if self.client_ca is not None:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(self.client_ca)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length", "0")))
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            Webhook(self.secret).verify(body, headers)
            verified = True
        except Exception:  # noqa: BLE001 - the test asserts on `verified`
            verified = False
        message = json.loads(body)
        webhook_id = headers.get("webhook-id", "")
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self._in_flight_ids[webhook_id] = self._in_flight_ids.get(webhook_id, 0) + 1
            if self._in_flight_ids[webhook_id] > 1:
                self.concurrent_same_id += 1
        try:
            answer = self.answer(message)
            if answer.delay and not self._still_connected(request, answer.delay):
                return  # the forwarder gave up on this attempt (a timeout) and closed the connection
            with self._lock:
                self.received.append(Received(webhook_id, message, time.time(), verified, answer.status, headers))
            payload = b'{"ok":true}'
            request.send_response(answer.status)
            for name, value in answer.headers.items():
                request.send_header(name, value)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)
        except OSError:
            pass  # the forwarder gave up on this attempt (a timeout) and closed the connection
        finally:
            with self._lock:
                self.in_flight -= 1
                self._in_flight_ids[webhook_id] -= 1

    @staticmethod
    def _still_connected(request: BaseHTTPRequestHandler, seconds: float) -> bool:
        """Wait `seconds` (the answer's delay); False as soon as the client hangs up."""
        deadline = time.monotonic() + seconds
        connection = request.connection
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([connection], [], [], min(0.02, remaining))
            if readable and connection.recv(1, socket.MSG_PEEK) == b"":
                return False
        return True

    def delivered_ids(self) -> set[str]:
        """The message_ids answered with a 2xx."""
        with self._lock:
            return {item.message["message_id"] for item in self.received if 200 <= item.answered < 300}

    def attempts_of(self, message_id: str) -> list[Received]:
        with self._lock:
            return [item for item in self.received if item.message["message_id"] == message_id]
