"""Keyset paging positions: where a page ended in (instant, message_id) order, as an opaque,
URL-safe string. Pure functions; nothing here touches the database."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

# The fixed-width instant form of timestamps.instant_key.
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z", re.ASCII)
MAX_CURSOR_CHARS = 2048


@dataclass(frozen=True)
class Position:
    """The last message of a page: the next page starts after it."""

    instant: str
    message_id: str


class MalformedCursor(ValueError):
    """The cursor is not one this service handed out."""


def encode_cursor(position: Position) -> str:
    """An opaque string for `position`."""
    raw = json.dumps([position.instant, position.message_id], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position a cursor stands for; raises MalformedCursor."""
    if not cursor or len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise MalformedCursor("not a cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        instant, message_id = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError, TypeError):
        raise MalformedCursor("not a cursor") from None
    if not isinstance(instant, str) or not isinstance(message_id, str) or not _INSTANT.fullmatch(instant):
        raise MalformedCursor("not a cursor")
    return Position(instant, message_id)
