"""Which stored messages a destination is given, in what order, and how fast.

A destination's `match` decides which messages it is owed at all; its `order` gives every
message a key (its sender, or its sender and recipient) so that the next message of a key
is tried only once the one before it was delivered or dead-lettered; `rate_per_second`
bounds the attempts started in any second. The match and order are written beside the
destination's feed position, so that `replay` (another process) chooses as the forwarder does.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from webhook_service.storage.messages import StoredMessage, fold_text

ORDER_NONE = "none"
ORDER_SENDER = "sender"
ORDER_CONVERSATION = "conversation"
ORDERS = (ORDER_NONE, ORDER_SENDER, ORDER_CONVERSATION)


def number_matches(patterns: tuple[str, ...], number: str) -> bool:
    """Whether `number` is one of `patterns`: equal, or starting with one that ends in `*`."""
    return any(number.startswith(pattern[:-1]) if pattern.endswith("*") else number == pattern for pattern in patterns)


@dataclass(frozen=True)
class Match:
    """Every given condition must hold: `from` and `to` among the numbers or prefixes, the
    text holding one of `text_contains` (compared folded, as `q` compares)."""

    senders: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()  # folded

    def __call__(self, message: StoredMessage) -> bool:
        if self.senders and not number_matches(self.senders, message.sender):
            return False
        if self.recipients and not number_matches(self.recipients, message.recipient):
            return False
        if self.texts:
            folded = fold_text(message.text)
            return folded is not None and any(text in folded for text in self.texts)
        return True

    def document(self) -> dict:
        return {"from": list(self.senders), "to": list(self.recipients), "text_contains": list(self.texts)}


@dataclass(frozen=True)
class Policy:
    """What a destination is owed (`match`, None for every message) and the key that orders
    its deliveries (`order`)."""

    match: Match | None = None
    order: str = ORDER_NONE

    def keeps(self, message: StoredMessage) -> bool:
        return self.match is None or self.match(message)

    def key(self, message: StoredMessage) -> str | None:
        """The ordering key of `message`, None when deliveries are not ordered."""
        if self.order == ORDER_SENDER:
            return message.sender
        if self.order == ORDER_CONVERSATION:
            return f"{message.sender} {message.recipient}"
        return None

    @property
    def ordered(self) -> bool:
        return self.order != ORDER_NONE

    def document(self) -> dict:
        """The form kept beside the destination's position."""
        return {"match": None if self.match is None else self.match.document(), "order": self.order}

    @classmethod
    def from_document(cls, document: dict | None) -> Policy:
        if not document:
            return cls()
        match = document.get("match")
        return cls(
            match=None
            if match is None
            else Match(tuple(match["from"]), tuple(match["to"]), tuple(match["text_contains"])),
            order=document.get("order", ORDER_NONE),
        )


class RateLimit:
    """At most `per_second` attempts started in any second (for a rate below one, one in
    every 1/rate seconds), spread out rather than in bursts.

    Two rules, both must allow a start: a log of the starts in the last window (the hard
    bound: fewer than the limit began in it), and a pace of one start every 1/rate seconds,
    which keeps a consumer from seeing a second's starts at once. A start that came late
    brings the next one forward by up to half an interval (so that a scheduler waking late
    does not lower the rate over time): two starts are never closer than half an interval.
    """

    def __init__(self, per_second: float) -> None:
        self.window = max(1.0, 1.0 / per_second)
        self.limit = max(1, int(per_second * self.window + 1e-9))
        self.interval = 1.0 / per_second
        self._starts: deque[float] = deque()
        self._paced_until = 0.0  # the pace's next start, when it is on time
        self._lock = threading.Lock()

    def try_start(self, now: float | None = None) -> bool:
        """Count a start now if both rules allow one; False when they do not."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._wait(now) > 0:
                return False
            self._starts.append(now)
            self._paced_until = max(self._paced_until, now - self.interval / 2) + self.interval
            return True

    def wait_seconds(self, now: float | None = None) -> float:
        """How long until a start would be allowed (0 when it is now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._wait(now)

    def _wait(self, now: float) -> float:
        while self._starts and self._starts[0] <= now - self.window:
            self._starts.popleft()
        by_log = 0.0 if len(self._starts) < self.limit else self._starts[-self.limit] + self.window - now
        by_pace = self._paced_until - now
        return max(0.0, by_log, by_pace)
