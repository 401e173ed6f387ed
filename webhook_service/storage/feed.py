"""The feed: every stored message once, in the order of the commits that stored it.

A message's position is its `messages.id`, handed out by the dialect's reserve_positions in
an order readers pass only where no transaction still running can take a lower one (the
dialect's feed_horizon); positions are never reused, so `id > after` below the horizon is
exactly what was stored after a reader's position, also after purges. Pure position codec
and queries; no Flask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, and_, func, not_, select

from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.messages import PAGE_COLUMNS, StoredMessage, stored_message
from webhook_service.storage.tables import messages

BEGINNING = 0
LATEST = "latest"
# Positions are BIGINT; their text form is canonical (no sign, no leading zeros).
MAX_POSITION = 2**63 - 1
_POSITION = re.compile(r"0|[1-9][0-9]{0,18}", re.ASCII)


class MalformedPosition(ValueError):
    """Not a position this service hands out."""


def encode_position(position: int) -> str:
    """The opaque text of a position (its decimal digits)."""
    return str(position)


def decode_position(text: str) -> int:
    """The position an `after` names (not `latest`); raises MalformedPosition."""
    if _POSITION.fullmatch(text) is None or int(text) > MAX_POSITION:
        raise MalformedPosition("not a feed position")
    return int(text)


@dataclass(frozen=True)
class FeedPage:
    """Messages stored after a position, in feed order, and the position to read on from."""

    items: list[StoredMessage]
    next_position: int


def latest_position(conn: Connection) -> int:
    """The feed's end: at or past the newest message a reader may pass to, before every
    message stored later (0 before the first)."""
    return dialect_of(conn).feed_end(conn)


def newest_position(conn: Connection) -> int:
    """The position of the newest message a reader may read now (0 when none is stored): it
    grows when a message enters the feed, and only then."""
    newest = select(func.max(messages.c.id)).where(*dialect_of(conn).feed_horizon())
    return conn.execute(newest).scalar_one() or 0


def held_back_seconds(conn: Connection) -> float:
    """How long the oldest message that is stored but not in the feed yet (a transaction that
    began before it still runs) has waited since it was stored; 0 when there is none."""
    horizon = dialect_of(conn).feed_horizon()
    if not horizon:
        return 0.0
    oldest = conn.execute(select(func.min(messages.c.created_at)).where(not_(and_(*horizon)))).scalar_one()
    if oldest is None:
        return 0.0
    return max(0.0, (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds())


def messages_after(conn: Connection, after: int, limit: int) -> list[tuple[int, StoredMessage]]:
    """Up to `limit` (position, message) pairs stored after position `after`, oldest first:
    one primary-key range, as cheap at the millionth message as at the first."""
    dialect = dialect_of(conn)
    rows = conn.execute(
        select(messages.c.id, *PAGE_COLUMNS)
        .where(messages.c.id > after, *dialect.feed_horizon())
        .order_by(messages.c.id)
        .limit(limit)
    )
    return [(row.id, stored_message(dialect, row)) for row in rows]


def read_feed(conn: Connection, after: int, limit: int) -> FeedPage:
    """Up to `limit` messages stored after position `after`, and where to read on."""
    found = messages_after(conn, after, limit)
    return FeedPage(items=[message for _, message in found], next_position=found[-1][0] if found else after)
