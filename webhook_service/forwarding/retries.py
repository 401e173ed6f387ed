"""When to try a delivery again, and when a destination is taken for down: pure decisions
over one destination's settings, an attempt's result and the clock (no I/O, no threads).

Retries wait between half and all of min(backoff_max, backoff_initial * 2^(n-1)) after the
n-th failed attempt (a 429's or 503's Retry-After instead, up to an hour or backoff_max if
longer, and no attempt to the destination at all before it); after max_attempts or
max_age_seconds a message is a dead letter, and any status other than 2xx, 408, 429 and 5xx
makes one at once. After BREAKER_FAILURES failures in a row the destination is taken for
down: one attempt at a time, spaced out the same way, until an attempt succeeds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from webhook_service.forwarding.config import Destination
from webhook_service.forwarding.delivery import Attempt, Result

BREAKER_FAILURES = 3
# A Retry-After is honoured up to the larger of this and backoff_max_seconds.
RETRY_AFTER_CEILING_SECONDS = 3600.0


def backoff_seconds(destination: Destination, failures: int, rng: random.Random) -> float:
    """Between half and all of min(backoff_max, backoff_initial * 2^(failures-1))."""
    ceiling = min(destination.backoff_max_seconds, destination.backoff_initial_seconds * 2 ** max(0, failures - 1))
    return rng.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class Decision:
    """What becomes of a message after an attempt: delivered, tried again at `retry_at`, or
    a dead letter."""

    delivered: bool = False
    dead: bool = False
    retry_at: float | None = None


class Breaker:
    """A destination's failures in a row: how many attempts it may have in flight, and from
    when (a probe at a time once it is taken for down; none before a Retry-After ends)."""

    def __init__(self, destination: Destination, rng: random.Random | None = None) -> None:
        self.destination = destination
        self.rng = rng or random.Random()
        self.failures_in_a_row = 0
        self.next_probe_at = 0.0
        # No attempt to the destination before this (it answered with a Retry-After).
        self.paused_until = 0.0

    @property
    def probing(self) -> bool:
        """Taken for down: one attempt at a time, spaced out."""
        return self.failures_in_a_row >= BREAKER_FAILURES

    def allowed(self, now: float) -> int:
        """Attempts that may be in flight now."""
        if not self.probing:
            return self.destination.concurrency
        return 1 if now >= self.next_probe_at else 0

    def decide(self, attempts_before: int, queued_at: float, attempt: Attempt, finished: float) -> Decision:
        """Record `attempt` (the message's attempt number `attempts_before + 1`, owed since
        `queued_at`, ended at `finished`) and say what becomes of the message."""
        destination = self.destination
        if attempt.result is Result.DELIVERED:
            self.failures_in_a_row = 0
            return Decision(delivered=True)
        attempts = attempts_before + 1
        if not attempt.result.retried:
            return Decision(dead=True)
        self.failures_in_a_row += 1
        if self.probing:
            self.next_probe_at = finished + backoff_seconds(
                destination, self.failures_in_a_row - BREAKER_FAILURES + 1, self.rng
            )
        if attempt.retry_after is not None:
            delay = min(attempt.retry_after, max(destination.backoff_max_seconds, RETRY_AFTER_CEILING_SECONDS))
            # The destination asked everyone to wait: no attempt to it before then.
            self.paused_until = max(self.paused_until, finished + delay)
        else:
            delay = backoff_seconds(destination, attempts, self.rng)
        if attempts >= destination.max_attempts or finished - queued_at >= destination.max_age_seconds:
            return Decision(dead=True)
        return Decision(retry_at=finished + delay)
