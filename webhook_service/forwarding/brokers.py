"""Attempts to hand a message to a broker: NATS JetStream (nats-py) or an AMQP 0-9-1 broker
such as RabbitMQ (aio-pika), on the forwarder's event loop, as the HTTP Sender does.

A message counts as delivered only when the broker took responsibility for it: JetStream's
acknowledgement from the stream, or the AMQP broker's publisher confirm. The body is the
message document, the headers the Standard Webhooks ones (the signature when the destination
has a secret); `webhook-id` also names the message to the broker (JetStream's `Nats-Msg-Id`,
whose duplicate window drops a resend; AMQP's `message_id` property). Anything else (no
connection, no stream, a full stream, a message no queue is bound for, a timeout) is an
attempt to retry, with the destination's backoff and then a dead letter, as for HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from urllib.parse import unquote, urlsplit

from webhook_service.forwarding.config import Destination
from webhook_service.forwarding.delivery import Attempt, Result, signed_message
from webhook_service.storage.messages import StoredMessage

CONNECT_TIMEOUT_CEILING_SECONDS = 5.0
CLIENT_NAME = "webhook-service-forwarder"


def _tls(destination: Destination) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=destination.ca_file)


def _reason(error: BaseException) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text[:300]


class NatsSender:
    """Publishes to a JetStream stream through one connection, made at the first attempt and
    made again whenever it was closed (nats-py tries a lost one again twice first)."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self._connection = None
        self._jetstream = None
        self._connecting = asyncio.Lock()
        self._last_error: BaseException | None = None  # what the client last told (a refused sign-in)

    async def _told(self, error: BaseException) -> None:
        self._last_error = error

    async def _ready(self):
        if self._connection is not None and not self._connection.is_closed:
            return self._jetstream  # connected (or reconnecting by itself): no lock to take
        import nats  # loaded only by forwarders that have a NATS destination

        async with self._connecting:
            if self._connection is None or self._connection.is_closed:
                broker, timeout = self.destination.broker, self.destination.timeout_seconds
                parts = urlsplit(self.destination.url)
                options = {
                    "servers": [self.destination.url],
                    "name": CLIENT_NAME,
                    "connect_timeout": min(CONNECT_TIMEOUT_CEILING_SECONDS, timeout),
                    # A lost connection is tried again twice, then closed: the next attempt
                    # connects anew (and a refused sign-in is an attempt's error at once).
                    "allow_reconnect": True,
                    "max_reconnect_attempts": 2,
                    "reconnect_time_wait": 0.5,
                    # Told, not printed: an attempt's outcome says what went wrong.
                    "error_cb": self._told,
                    "disconnected_cb": _quiet_event,
                    "reconnected_cb": _quiet_event,
                    "closed_cb": _quiet_event,
                }
                if parts.scheme == "tls" or self.destination.ca_file is not None:
                    options["tls"] = _tls(self.destination)
                if broker.user is not None:
                    options["user"], options["password"] = broker.user, broker.password
                if broker.token is not None:
                    options["token"] = broker.token
                if broker.creds_file is not None:
                    options["user_credentials"] = broker.creds_file
                self._connection = await nats.connect(**options)
                self._last_error = None  # told while connecting: connected now
                self._jetstream = self._connection.jetstream(timeout=timeout)
            return self._jetstream

    async def attempt(self, message: StoredMessage) -> Attempt:
        """Publish once and wait for the stream's acknowledgement; never raises."""
        from nats import errors as nats_errors
        from nats.js import errors as js_errors

        body, headers = signed_message(self.destination, message)
        headers["Nats-Msg-Id"] = headers["webhook-id"]
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.destination.timeout_seconds):
                jetstream = await self._ready()
                await jetstream.publish(
                    self.destination.broker.subject, body, headers=headers, timeout=self.destination.timeout_seconds
                )
        except (TimeoutError, nats_errors.TimeoutError):
            # Every attempt waiting for the same connection says why it was not made.
            told = self._last_error
            if told is not None and (self._connection is None or not self._connection.is_connected):
                # Still connecting when the time ran out: what the client was told says why
                # (a certificate refused, a sign-in refused), not the timeout.
                error = f"timed out connecting: {_reason(told)}"[:300]
                return Attempt(Result.CONNECTION_ERROR, time.monotonic() - started, error=error)
            return Attempt(Result.TIMEOUT, time.monotonic() - started, error="timed out")
        except (js_errors.NoStreamResponseError, nats_errors.NoRespondersError):
            return Attempt(Result.RETRYABLE_STATUS, time.monotonic() - started, error="no stream for the subject")
        except js_errors.APIError as error:
            # A full stream (maximum messages or bytes), a stream that refuses: retried.
            description = getattr(error, "description", None) or str(error)
            return Attempt(Result.RETRYABLE_STATUS, time.monotonic() - started, error=f"JetStream: {description}"[:300])
        except Exception as error:  # noqa: BLE001 - every failure of the client is an attempt to retry
            told = self._last_error  # kept until a connection is made: every attempt failing meanwhile says it
            reason = _reason(error) if told is None or told is error else f"{_reason(error)} ({_reason(told)})"
            return Attempt(Result.CONNECTION_ERROR, time.monotonic() - started, error=reason[:300])
        return Attempt(Result.DELIVERED, time.monotonic() - started)

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            try:
                await asyncio.wait_for(self._connection.drain(), CONNECT_TIMEOUT_CEILING_SECONDS)
            except Exception:  # noqa: BLE001 - closing at stop: nothing is left to tell
                await self._connection.close()


class AmqpSender:
    """Publishes persistent, mandatory messages on one confirming channel (aio-pika's robust
    connection, made at the first attempt, reconnects by itself)."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self._connection = None
        self._exchange = None
        self._connecting = asyncio.Lock()

    async def _ready(self):
        if self._exchange is not None and self._connection is not None and not self._connection.is_closed:
            return self._exchange  # connected, with a channel: no lock to take
        import aio_pika  # loaded only by forwarders that have an AMQP destination

        async with self._connecting:
            broker, parts = self.destination.broker, urlsplit(self.destination.url)
            if self._connection is None or self._connection.is_closed:
                secure = parts.scheme == "amqps"
                self._connection = await aio_pika.connect_robust(
                    host=parts.hostname,
                    port=parts.port or (5671 if secure else 5672),
                    virtualhost=unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
                    login=broker.user or "guest",
                    password=broker.password or "guest",
                    ssl=secure,
                    ssl_context=_tls(self.destination) if secure else None,
                    timeout=min(CONNECT_TIMEOUT_CEILING_SECONDS, self.destination.timeout_seconds),
                    client_properties={"connection_name": CLIENT_NAME},
                    # Back soon after a broker restart (aio-pika's default waits 5 s).
                    reconnect_interval=1,
                )
                self._exchange = None
            if self._exchange is None:
                channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
                self._exchange = (
                    channel.default_exchange
                    if broker.exchange == ""
                    else await channel.get_exchange(broker.exchange, ensure=False)
                )
            return self._exchange

    async def attempt(self, message: StoredMessage) -> Attempt:
        """Publish once and wait for the broker's confirm; never raises."""
        import aio_pika
        from aio_pika.exceptions import DeliveryError

        body, headers = signed_message(self.destination, message)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.destination.timeout_seconds):
                exchange = await self._ready()
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        headers=headers,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=headers["webhook-id"],
                    ),
                    routing_key=self.destination.broker.routing_key,
                    mandatory=True,
                )
        except TimeoutError:
            return Attempt(Result.TIMEOUT, time.monotonic() - started, error="timed out")
        except DeliveryError as error:
            returned = getattr(error, "message", None) is not None
            reason = "returned: no queue is bound for the routing key" if returned else "not confirmed by the broker"
            return Attempt(Result.RETRYABLE_STATUS, time.monotonic() - started, error=reason)
        except Exception as error:  # noqa: BLE001 - every failure of the client is an attempt to retry
            self._exchange = None  # a closed channel (an unknown exchange closes it): opened again next time
            return Attempt(Result.CONNECTION_ERROR, time.monotonic() - started, error=_reason(error))
        return Attempt(Result.DELIVERED, time.monotonic() - started)

    async def close(self) -> None:
        if self._connection is not None:
            # Closing at stop: a broker gone already leaves nothing to tell.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), CONNECT_TIMEOUT_CEILING_SECONDS)


async def _quiet_event() -> None:
    pass
