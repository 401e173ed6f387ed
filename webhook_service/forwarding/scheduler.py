"""One destination's delivery loop: take messages from the feed (and due retries), keep at
most `concurrency` attempts in flight, record each outcome in the database.

Retries, dead letters and the breaker that takes a destination for down are decided by
`retries.Breaker` (pure); a destination taken for down is probed with a message not yet
tried where there is one, so that one message it keeps refusing cannot keep it closed, and
nothing new is taken from the feed until an attempt succeeds. The backlog stays the feed.

Messages the destination's match leaves out are passed over as they are taken. With
`rate_per_second`, an attempt (retries included) starts only while the second before it saw
fewer; with an `order`, the database hands out only the first owed message of each key, and
once one is settled the next of its key is looked for at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

import structlog

from webhook_service.forwarding.brokers import AmqpSender, NatsSender
from webhook_service.forwarding.config import Destination
from webhook_service.forwarding.delivery import Attempt, Result, Sender, webhook_id
from webhook_service.forwarding.http_loop import HttpLoop
from webhook_service.forwarding.metrics import ForwarderMetrics
from webhook_service.forwarding.policy import RateLimit
from webhook_service.forwarding.retries import Breaker
from webhook_service.storage import forwarding as state
from webhook_service.storage.engine import DATABASE_ERRORS, Database, describe_database_error
from webhook_service.storage.feed import newest_position
from webhook_service.timestamps import epoch_from_iso, iso_from_epoch

# Messages taken from the feed at once, per slot of concurrency.
BATCH_PER_SLOT = 8
# How often an idle destination looks for new messages, and for due retries.
POLL_SECONDS = 0.05
RETRY_CHECK_SECONDS = 0.5
# Outcomes are written together, at most this often (each write is a transaction).
FLUSH_SECONDS = 0.02
# How often the lag and dead-letter gauges are read from the database.
GAUGE_SECONDS = 2.0
LEASE_MARGIN_SECONDS = 5.0
# After a database failure, the loop waits this long before it tries again.
DATABASE_RETRY_SECONDS = 1.0

logger = structlog.get_logger("webhook_service.forwarder")


class DestinationWorker(threading.Thread):
    """Delivers every stored message to one destination until `stopping` is set."""

    def __init__(
        self,
        destination: Destination,
        database: Database,
        metrics: ForwarderMetrics,
        owner: str,
        stopping: threading.Event,
        http_loop: HttpLoop,
    ) -> None:
        super().__init__(name=f"forward-{destination.name}", daemon=True)
        self.destination = destination
        self.database = database
        self.metrics = metrics
        self.owner = owner
        self.stopping = stopping
        self._http = http_loop
        self.sender: Sender = http_loop.call(_open_sender(destination))
        self._condition = threading.Condition()
        self._queue: deque[state.Claimed] = deque()
        self._results: list[tuple[state.Claimed, Attempt, float]] = []
        self._held: set[int] = set()  # positions leased here: queued or in flight
        self._in_flight = 0
        self._position = -1  # the destination's position as last seen (a hint)
        self._breaker = Breaker(destination)
        self._next_retry_check = 0.0
        self._next_gauges = 0.0
        self._next_renewal = 0.0
        self._last_flush = 0.0
        self._sole_forwarder = False
        self._rate = None if destination.rate_per_second is None else RateLimit(destination.rate_per_second)
        self._wall_minus_monotonic = time.time() - time.monotonic()

    # The loop.

    def run(self) -> None:
        lock = self.database.dialect.forwarder_lock(self.destination.name)
        if lock is not None and not self._wait_for(lock):
            return
        # The only forwarder of this destination may take over what a killed one left leased.
        self._sole_forwarder = lock is not None
        try:
            if self._register():
                self._serve()
        finally:
            self._stop()
            if lock is not None:
                lock.release()

    def _wait_for(self, lock) -> bool:
        said = False
        while not self.stopping.is_set():
            if lock.acquire():
                return True
            if not said:
                logger.warning(
                    "another forwarder serves this destination on this database; waiting for it to stop",
                    destination=self.destination.name,
                )
                said = True
            self.stopping.wait(1.0)
        return False

    def _register(self) -> bool:
        while not self.stopping.is_set():
            try:
                with self.database.write_transaction() as conn:
                    self._position = state.register_destination(
                        conn, self.destination.name, self.destination.start, self.destination.policy.document()
                    )
                logger.info("forwarding", destination=self.destination.name, position=self._position)
                return True
            except DATABASE_ERRORS as error:
                self._database_failed("register", error)
        return False

    def _serve(self) -> None:
        while not self.stopping.is_set():
            now = time.time()
            try:
                self._flush(now)
                self._update_gauges(now)
                self._renew_leases(now)
                if now >= self._breaker.paused_until:
                    self._dispatch(now)
            except DATABASE_ERRORS as error:
                self._database_failed("state", error)
                continue
            self._wait_for_work()

    def _wait_for_work(self) -> None:
        # Woken when an attempt ends (a slot is free); outcomes wait for their flush at most
        # FLUSH_SECONDS, new messages for the next look at most POLL_SECONDS.
        with self._condition:
            timeout = POLL_SECONDS
            if self._results:
                timeout = max(0.001, FLUSH_SECONDS - (time.time() - self._last_flush))
            now = time.time()
            ready = self._queue and now >= self._breaker.paused_until and self._in_flight < self._allowed(now)
            if ready and self._rate is not None and (wait := self._rate.wait_seconds()) > 0:
                ready, timeout = False, min(timeout, wait)
            if not ready:
                self._condition.wait(timeout)

    def _dispatch(self, now: float) -> None:
        # Refilled before it runs dry, so that the attempts in flight always find a next one.
        if len(self._queue) < self.destination.concurrency and self._allowed(now) > 0:
            self._take(now)
        with self._condition:
            launched = 0
            while (
                self._in_flight < self._allowed(now)
                and self._queue
                and self._rate_ready(launched)
                and (claimed := self._next_to_send()) is not None
            ):
                self._in_flight += 1
                launched += 1
                self._http.launch([self._send_chain(claimed)])
            self.metrics.in_flight.labels(self.destination.name).set(self._in_flight)

    def _next_to_send(self) -> state.Claimed | None:
        """The next queued message to try (purged ones are settled on the way); hold the condition."""
        while self._queue:
            claimed = self._queue.popleft()
            if claimed.message is not None:
                return claimed
            # Purged before it could be sent: nothing is owed any more.
            logger.info("forward skipped: message purged", destination=self.destination.name, position=claimed.position)
            self._results.append((claimed, Attempt(Result.DELIVERED, 0.0), time.time()))
        return None

    def _rate_ready(self, launched: int = 0) -> bool:
        """Whether rate_per_second allows a start now. Under a rate the scheduler starts one
        chain of attempts at a time (`launched` so far): chains go on by themselves."""
        return self._rate is None or (launched == 0 and self._rate.wait_seconds() == 0)

    async def _paced(self) -> float:
        """On the event loop, just before an attempt is sent: wait for rate_per_second to
        allow it and count it (the start is counted when the request leaves, not before).
        Returns when the attempt starts (epoch seconds): under a rate, the very moment the
        limit counted, on the monotonic clock it counts with, so that the starts a log shows
        are as far apart as the limit kept them."""
        if self._rate is None:
            return time.time()
        while not self._rate.try_start(now := time.monotonic()):
            await asyncio.sleep(max(0.001, self._rate.wait_seconds()))
        return now + self._wall_minus_monotonic

    def _probing(self) -> bool:
        return self._breaker.probing

    def _allowed(self, now: float) -> int:
        return self._breaker.allowed(now)

    # Taking work.

    def _lease_until(self, now: float) -> float:
        return now + lease_seconds(self.destination)

    def _take(self, now: float) -> None:
        probing = self._probing()
        limit = 1 if probing else self.destination.concurrency * BATCH_PER_SLOT - len(self._queue)
        claimed: list[state.Claimed] = []
        if probing:
            claimed = self._take_new(now, limit)
        if len(claimed) < limit and now >= self._next_retry_check:
            self._next_retry_check = now + RETRY_CHECK_SECONDS
            claimed += self._take_due(now, limit - len(claimed))
        if len(claimed) < limit and not probing:
            claimed += self._take_new(now, limit - len(claimed))
        with self._condition:
            self._held.update(item.position for item in claimed)
            self._queue.extend(claimed)

    def _take_due(self, now: float, limit: int) -> list[state.Claimed]:
        name = self.destination.name
        with self.database.read_transaction() as conn:
            if not state.has_due(conn, name, self.owner, now, self._sole_forwarder):
                return []
        with self.database.write_transaction() as conn:
            return state.claim_due(conn, name, self.owner, self._lease_until(now), now, limit, self._sole_forwarder)

    def _take_new(self, now: float, limit: int) -> list[state.Claimed]:
        with self.database.read_transaction() as conn:
            if newest_position(conn) <= self._position:
                return []
        with self.database.write_transaction() as conn:
            taken = state.claim_new(
                conn, self.destination.name, self.owner, self._lease_until(now), now, limit, self.destination.policy
            )
        self._position = taken.position
        if taken.skipped:
            self.metrics.skipped.labels(self.destination.name).inc(taken.skipped)
        return taken.claimed

    def _renew_leases(self, now: float) -> None:
        if now < self._next_renewal:
            return
        self._next_renewal = now + self.destination.timeout_seconds / 2
        if self._held:
            with self.database.write_transaction() as conn:
                state.renew_leases(conn, self.destination.name, self.owner, sorted(self._held), self._lease_until(now))

    # Attempts.

    async def _send_chain(self, claimed: state.Claimed) -> None:
        """On the event loop: attempts one after another, taking the next queued message as
        soon as one ends, for as long as there is one and the destination allows it. The
        loop hands messages on itself; the scheduler only refills the queue."""
        name = self.destination.name
        while claimed is not None:
            attempt = await self._attempt(claimed, await self._paced())
            with self._condition:
                self._results.append((claimed, attempt, time.time()))
                now = time.time()
                allowed = self._in_flight <= self._allowed(now) and now >= self._breaker.paused_until
                allowed = allowed and bool(self._queue) and not self.stopping.is_set() and self._rate_ready()
                claimed = self._next_to_send() if allowed else None
                if claimed is None:
                    self._in_flight -= 1
                    self.metrics.in_flight.labels(name).set(self._in_flight)
                if claimed is None or len(self._queue) < self.destination.concurrency:
                    self._condition.notify_all()  # the scheduler refills the queue, or writes outcomes

    async def _attempt(self, claimed: state.Claimed, started_at: float) -> Attempt:
        """One attempt (started at `started_at`, as rate_per_second counted it), its metric
        and its log line."""
        try:
            attempt = await self.sender.attempt(claimed.message)
        except Exception as error:  # noqa: BLE001 - an attempt's outcome is always recorded
            attempt = Attempt(Result.CONNECTION_ERROR, 0.0, error=f"{type(error).__name__}: {error}"[:300])
        name = self.destination.name
        self.metrics.attempts.labels(name, attempt.result.value).inc()
        self.metrics.attempt_seconds.labels(name).set(attempt.seconds)
        logger.info(
            "forward attempt",
            destination=name,
            webhook_id=webhook_id(claimed.message.message_id),
            message_id=claimed.message.message_id,
            attempt=claimed.attempts + 1,
            outcome=attempt.result.value,
            status=attempt.status,
            error=attempt.error,
            latency_ms=round(attempt.seconds * 1000, 3),
            started_at=iso_from_epoch(started_at),
        )
        return attempt

    # Outcomes.

    def _flush(self, now: float, force: bool = False) -> None:
        with self._condition:
            if not self._results or (not force and now - self._last_flush < FLUSH_SECONDS):
                return
            results, self._results = self._results, []
        outcomes = [self._outcome(claimed, attempt, finished) for claimed, attempt, finished in results]
        try:
            with self.database.write_transaction() as conn:
                state.record_outcomes(conn, self.destination.name, outcomes)
                if self._probing() and self._queue:
                    # Down: what was taken but not tried goes back, free for the probes.
                    with self._condition:
                        queued = [claimed.position for claimed in self._queue]
                        self._queue.clear()
                    state.release_leases(conn, self.destination.name, self.owner, queued)
                    self._held.difference_update(queued)
        except BaseException:
            with self._condition:
                self._results = results + self._results  # written on the next try
            raise
        self._last_flush = now
        self._held.difference_update(outcome.position for outcome in outcomes)
        if self.destination.policy.ordered and any(outcome.delivered or outcome.dead for outcome in outcomes):
            # The next message of a settled key may be waiting for it: look at once.
            self._next_retry_check = 0.0

    def _outcome(self, claimed: state.Claimed, attempt: Attempt, finished: float) -> state.Outcome:
        decision = self._breaker.decide(claimed.attempts, claimed.queued_at, attempt, finished)
        if decision.delivered:
            return state.Outcome(claimed.position, delivered=True)
        if decision.dead:
            self._dead_lettered(claimed, attempt)
        return state.Outcome(
            claimed.position,
            delivered=False,
            attempts=claimed.attempts + 1,
            dead=decision.dead,
            next_attempt_at=finished if decision.dead else decision.retry_at,
            status=attempt.status,
            error=attempt.error or f"HTTP {attempt.status}",
            finished_at=finished,
        )

    def _dead_lettered(self, claimed: state.Claimed, attempt: Attempt) -> None:
        self.metrics.dead_lettered.labels(self.destination.name).inc()
        logger.warning(
            "forward dead letter",
            destination=self.destination.name,
            webhook_id=webhook_id(claimed.message.message_id),
            message_id=claimed.message.message_id,
            attempts=claimed.attempts + 1,
            status=attempt.status,
            error=attempt.error,
        )

    def _update_gauges(self, now: float) -> None:
        if now < self._next_gauges:
            return
        self._next_gauges = now + GAUGE_SECONDS
        name = self.destination.name
        with self.database.read_transaction() as conn:
            oldest = state.oldest_undelivered_at(conn, name)
            dead = state.count_dead(conn, name)
        self.metrics.dead_letters.labels(name).set(dead)
        self.metrics.lag_seconds.labels(name).set(0.0 if oldest is None else max(0.0, now - epoch_from_iso(oldest)))

    # Stopping and failures.

    def _stop(self) -> None:
        """Finish what is in flight within timeout_seconds, write the outcomes, give back the rest."""
        deadline = time.monotonic() + self.destination.timeout_seconds
        with self._condition:
            while self._in_flight and time.monotonic() < deadline:
                self._condition.wait(max(0.0, deadline - time.monotonic()))
        try:
            self._flush(time.time(), force=True)
            with self._condition:
                queued = [claimed.position for claimed in self._queue]
                self._queue.clear()
            if queued:
                with self.database.write_transaction() as conn:
                    state.release_leases(conn, self.destination.name, self.owner, queued)
        except DATABASE_ERRORS as error:
            # What is not written stays leased; it is tried again once the lease runs out.
            logger.error(
                "forwarder state not written at stop",
                destination=self.destination.name,
                error=describe_database_error(error),
            )
        self._http.call(self.sender.close())

    def _database_failed(self, doing: str, error: BaseException) -> None:
        logger.error(
            "forwarder database failed",
            destination=self.destination.name,
            doing=doing,
            error=describe_database_error(error),
        )
        self.stopping.wait(DATABASE_RETRY_SECONDS)


async def _open_sender(destination: Destination) -> Sender:
    if destination.kind == "nats":
        return NatsSender(destination)
    if destination.kind == "amqp":
        return AmqpSender(destination)
    return Sender(destination)


def lease_seconds(destination: Destination) -> float:
    """How long a lease lasts unrenewed before another forwarder may take the message over."""
    return 2 * destination.timeout_seconds + LEASE_MARGIN_SECONDS
