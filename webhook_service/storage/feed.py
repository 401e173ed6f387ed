"""The feed: every stored message once, in the order of the commits that stored it.

A message's position is its `messages.id`, handed out in commit order by the dialect's
reserve_positions; positions are never reused, so `id > after` is exactly what was stored
after a reader's position, also after purges. Pure position codec and queries; no Flask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, select

from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.messages import StoredMessage, page_columns, stored_message
from webhook_service.storage.tables import message_totals, messages

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
    """The position of the newest message ever stored (0 before the first): the feed's end."""
    return conn.execute(select(message_totals.c.last_position).where(message_totals.c.id == 1)).scalar_one()


def messages_after(conn: Connection, after: int, limit: int) -> list[tuple[int, StoredMessage]]:
    """Up to `limit` (position, message) pairs stored after position `after`, oldest first:
    one primary-key range, as cheap at the millionth message as at the first."""
    dialect = dialect_of(conn)
    rows = conn.execute(
        select(messages.c.id, *page_columns()).where(messages.c.id > after).order_by(messages.c.id).limit(limit)
    )
    return [(row.id, stored_message(dialect, row)) for row in rows]


def read_feed(conn: Connection, after: int, limit: int) -> FeedPage:
    """Up to `limit` messages stored after position `after`, and where to read on."""
    found = messages_after(conn, after, limit)
    return FeedPage(items=[message for _, message in found], next_position=found[-1][0] if found else after)
