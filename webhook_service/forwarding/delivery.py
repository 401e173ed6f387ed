"""One attempt to hand a message to a destination: signed with Standard Webhooks v1, sent
over a pooled keep-alive connection within a hard timeout, and judged by the answer."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp

from webhook_service.forwarding.config import Destination
from webhook_service.signatures import standard_headers
from webhook_service.storage.messages import StoredMessage, message_document

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


def signed_message(destination: Destination, message: StoredMessage) -> tuple[bytes, dict[str, str]]:
    """The body every destination gets (the message document, JSON) and its Standard Webhooks
    headers: `webhook-id`, `webhook-timestamp`, and `webhook-signature` when the destination
    has a secret (a broker destination may have none)."""
    body = json.dumps(message_document(message), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    identity, timestamp = webhook_id(message.message_id), int(time.time())
    if destination.secret is None:
        return body, {"webhook-id": identity, "webhook-timestamp": str(timestamp)}
    return body, standard_headers(destination.secret, identity, timestamp, body)


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
    """Sends a destination's attempts with aiohttp, on the forwarder's event loop: a pool of
    at most `concurrency` keep-alive connections, each attempt bounded by timeout_seconds
    in all (connecting within at most 5 s of it), TLS verified against the system's CAs or
    the destination's ca_file (and a client certificate shown when it has one), with its
    own headers beside the signature. Made, used and closed on the event loop.

    One event loop for every attempt: measured here, blocking clients on a thread per
    attempt spent most of the forwarder's CPU on handing the GIL between threads (49
    futex calls per message), and could not keep up with ingestion on two cores.
    """

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        tls = ssl.create_default_context(cafile=destination.ca_file)
        if destination.client_cert_file is not None:
            tls.load_cert_chain(destination.client_cert_file, destination.client_key_file)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=destination.concurrency, ssl=tls),
            timeout=aiohttp.ClientTimeout(
                total=destination.timeout_seconds,
                connect=min(CONNECT_TIMEOUT_CEILING_SECONDS, destination.timeout_seconds),
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )

    async def attempt(self, message: StoredMessage) -> Attempt:
        """POST the message document once; never raises for what the network or consumer does."""
        body, signature = signed_message(self.destination, message)
        headers = {
            "User-Agent": USER_AGENT,
            **self.destination.headers,
            "Content-Type": "application/json",
            **signature,
        }
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.destination.timeout_seconds):
                async with self._session.post(
                    self.destination.url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                    retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
                    # The answer's body is not needed: a small one is read so that the
                    # connection is kept; a large or unsized one is dropped with it.
                    length = response.content_length
                    if length is not None and length <= MAX_ANSWER_BYTES:
                        await response.read()
                    else:
                        response.close()
        except TimeoutError:
            return Attempt(Result.TIMEOUT, time.monotonic() - started, error="timed out")
        except (aiohttp.ClientError, OSError, ValueError) as error:
            return Attempt(Result.CONNECTION_ERROR, time.monotonic() - started, error=_reason(error))
        seconds = time.monotonic() - started
        if 200 <= status < 300:
            return Attempt(Result.DELIVERED, seconds, status=status)
        if status in RETRIED_STATUSES:
            return Attempt(Result.RETRYABLE_STATUS, seconds, status=status, retry_after=retry_after)
        return Attempt(Result.REFUSED, seconds, status=status)

    async def close(self) -> None:
        await self._session.close()


def _reason(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]
