"""One attempt to hand a message to a destination: signed with Standard Webhooks v1, sent
over a pooled connection with hard timeouts, and judged by the answer."""

from __future__ import annotations

import enum
import hashlib
import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import urllib3

from webhook_service.api.outputs import message_document
from webhook_service.forwarding.config import Destination
from webhook_service.signatures import standard_headers
from webhook_service.storage.messages import StoredMessage

# Statuses tried again later; any other non-2xx answer makes a dead letter at once.
RETRIED_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
# A consumer's answer body is not needed; at most this much is read before the connection
# is given back (more, and it is closed instead).
MAX_ANSWER_BYTES = 64 * 1024
CONNECT_TIMEOUT_CEILING_SECONDS = 5.0
USER_AGENT = "webhook-service-forwarder"


class Result(enum.StrEnum):
    """How an attempt ended: the `outcome` of its log line and metric."""

    DELIVERED = "delivered"
    RETRYABLE_STATUS = "retryable_status"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"

    @property
    def retried(self) -> bool:
        return self in (Result.RETRYABLE_STATUS, Result.TIMEOUT, Result.CONNECTION_ERROR)


@dataclass(frozen=True)
class Attempt:
    """The answer to one attempt."""

    result: Result
    seconds: float
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


def webhook_id(message_id: str) -> str:
    """A stable webhook-id for a stored message: the same on every retry and replay, and a
    safe header value whatever characters the message_id holds."""
    return "msg_" + hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks to wait (a number or an HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class Sender:
    """Sends a destination's attempts over one connection pool (at most `concurrency`
    connections), TLS verified against the system's CAs or the destination's ca_file."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self._timeout = urllib3.Timeout(
            total=destination.timeout_seconds,
            connect=min(CONNECT_TIMEOUT_CEILING_SECONDS, destination.timeout_seconds),
            read=destination.timeout_seconds,
        )
        self._pool = urllib3.PoolManager(
            num_pools=1,
            maxsize=destination.concurrency,
            block=True,
            cert_reqs="CERT_REQUIRED",
            ca_certs=destination.ca_file,
            retries=False,
            timeout=self._timeout,
        )

    def attempt(self, message: StoredMessage) -> Attempt:
        """POST the message document once; never raises for what the network or consumer does."""
        body = json.dumps(message_document(message), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **standard_headers(self.destination.secret, webhook_id(message.message_id), int(time.time()), body),
        }
        started = time.monotonic()
        try:
            response = self._pool.request(
                "POST", self.destination.url, body=body, headers=headers, preload_content=False, redirect=False
            )
        except urllib3.exceptions.NewConnectionError as error:
            # (A subclass of the timeout errors in urllib3: refused, unreachable, unresolvable.)
            return Attempt(Result.CONNECTION_ERROR, time.monotonic() - started, error=_reason(error))
        except urllib3.exceptions.TimeoutError:
            return Attempt(Result.TIMEOUT, time.monotonic() - started, error="timed out")
        except urllib3.exceptions.HTTPError as error:
            return Attempt(Result.CONNECTION_ERROR, time.monotonic() - started, error=_reason(error))
        try:
            status = response.status
            retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
            self._finish(response)
        except urllib3.exceptions.HTTPError:
            pass  # the status is known; only the answer's body was cut off
        seconds = time.monotonic() - started
        if 200 <= status < 300:
            return Attempt(Result.DELIVERED, seconds, status=status)
        if status in RETRIED_STATUSES:
            return Attempt(Result.RETRYABLE_STATUS, seconds, status=status, retry_after=retry_after)
        return Attempt(Result.REFUSED, seconds, status=status)

    @staticmethod
    def _finish(response) -> None:
        # Read a small answer so the connection goes back to the pool; drop a large one.
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) <= MAX_ANSWER_BYTES:
            response.read()
            response.release_conn()
        else:
            response.close()

    def close(self) -> None:
        self._pool.clear()


def _reason(error: Exception) -> str:
    # urllib3 wraps the socket's error; its own text repeats the URL and the pool's repr.
    cause = getattr(error, "reason", None) or error
    return " ".join(f"{type(cause).__name__}: {cause}".split())[:300]
