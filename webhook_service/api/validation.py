"""How request fields are checked, and what a failure says: bounds, the FastAPI-style error
catalog (each message and its `type`), field validators and the query-string field types
the schemas of api/inputs.py are built from.

Failures are reported as FastAPI-style error lists (`{"loc": [...], "msg": ..., "type": ...}`)
so clients of the original API keep working.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields

from webhook_service.storage.cursor import MalformedCursor, Position, decode_cursor
from webhook_service.storage.feed import LATEST, MalformedPosition, decode_position
from webhook_service.storage.read_model.timeline import (
    BUCKET_SECONDS,
    MAX_POINTS,
)
from webhook_service.timestamps import instant_key

MAX_TEXT_CHARS = 4096
MAX_MESSAGE_ID_CHARS = 256
MAX_QUERY_TEXT_CHARS = 4096
MAX_LIMIT = 100
DEFAULT_LIMIT = 50
MAX_OFFSET = 2**63 - 1
MAX_FEED_LIMIT = 1000
DEFAULT_FEED_LIMIT = 100
MAX_FEED_WAIT_SECONDS = 30

E164_PATTERN = re.compile(r"\+[0-9]{1,15}")
# The forms below as the OpenAPI document states them (the validators above decide).
E164_DOCUMENTED = {"pattern": r"^\+[0-9]{1,15}$", "example": "+919876543210"}
TS_DOCUMENTED = {
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z$",
    "description": "UTC, ISO-8601 with Z, a real calendar date and time; 1 to 9 fraction digits.",
    "example": "2025-01-15T10:00:00Z",
}
QUERY_INTEGER_PATTERN = re.compile(r"\s*[+-]?[0-9]{1,30}\s*")
STRICT_INTEGER_PATTERN = re.compile(r"0|[1-9][0-9]{0,9}", re.ASCII)

FIELD_REQUIRED = "Field required"
NOT_A_STRING = "Input should be a valid string"
BLANK_STRING = "Value error, must contain at least one non-space character"
NOT_UNICODE = "Value error, must be valid Unicode text (no lone surrogates)"
NOT_E164 = "Value error, must be E.164: '+' then 1 to 15 digits"
NOT_A_TIMESTAMP = "Value error, must be UTC ISO-8601 YYYY-MM-DDTHH:MM:SS[.fraction]Z with a real date"
TEXT_TOO_LONG = f"String should have at most {MAX_TEXT_CHARS} characters"
MESSAGE_ID_TOO_LONG = f"String should have at most {MAX_MESSAGE_ID_CHARS} characters"
QUERY_TEXT_TOO_LONG = f"String should have at most {MAX_QUERY_TEXT_CHARS} characters"
NOT_AN_INTEGER = "Input should be a valid integer, unable to parse string as an integer"
LIMIT_TOO_SMALL = "Input should be greater than or equal to 1"
LIMIT_TOO_LARGE = f"Input should be less than or equal to {MAX_LIMIT}"
OFFSET_TOO_SMALL = "Input should be greater than or equal to 0"
OFFSET_TOO_LARGE = f"Input should be less than or equal to {MAX_OFFSET}"
NOT_A_CURSOR = "Value error, not a cursor: pass next_cursor from a previous page as it was"
OFFSET_WITH_CURSOR = "Value error, offset must be 0 or absent when cursor is given"
NOT_A_POSITION = "Value error, not a feed position: pass next from a previous answer as it was, or latest"
FEED_LIMIT_TOO_LARGE = f"Input should be less than or equal to {MAX_FEED_LIMIT}"
NOT_A_BUCKET = "Input should be 'hour' or 'day'"
UNTIL_NOT_AFTER_SINCE = "Value error, until must be after since"
SINCE_NOT_IN_THE_PAST = "Value error, since must be before now (until's default)"
TOO_MANY_POINTS = f"Value error, at most {MAX_POINTS} buckets from since to until: narrow the range, or use bucket=day"
WAIT_TOO_SMALL = OFFSET_TOO_SMALL
WAIT_TOO_LARGE = f"Input should be less than or equal to {MAX_FEED_WAIT_SECONDS}"

ERROR_TYPES = {
    FIELD_REQUIRED: "missing",
    NOT_A_STRING: "string_type",
    TEXT_TOO_LONG: "string_too_long",
    MESSAGE_ID_TOO_LONG: "string_too_long",
    QUERY_TEXT_TOO_LONG: "string_too_long",
    NOT_AN_INTEGER: "int_parsing",
    LIMIT_TOO_SMALL: "greater_than_equal",
    OFFSET_TOO_SMALL: "greater_than_equal",
    LIMIT_TOO_LARGE: "less_than_equal",
    OFFSET_TOO_LARGE: "less_than_equal",
    FEED_LIMIT_TOO_LARGE: "less_than_equal",
    WAIT_TOO_LARGE: "less_than_equal",
    NOT_A_BUCKET: "enum",
}

STRING_ERRORS = {"required": FIELD_REQUIRED, "null": NOT_A_STRING, "invalid": NOT_A_STRING}


def not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError(BLANK_STRING)


def unicode_text(value: str) -> None:
    # JSON can escape lone surrogates ("\ud800"), which are not text and cannot be stored.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(NOT_UNICODE) from None


def e164(value: str) -> None:
    if E164_PATTERN.fullmatch(value) is None:
        raise ValidationError(NOT_E164)


def timestamp(value: str) -> None:
    try:
        instant_key(value)
    except ValueError:
        raise ValidationError(NOT_A_TIMESTAMP) from None


def bucket(value: str) -> None:
    if value not in BUCKET_SECONDS:
        raise ValidationError(NOT_A_BUCKET)


def max_chars(limit: int, message: str):
    def check(value: str) -> None:
        if len(value) > limit:
            raise ValidationError(message)

    return check


def int_range(minimum: int, maximum: int, too_small: str, too_large: str):
    def check(value: int) -> None:
        if value < minimum:
            raise ValidationError(too_small)
        if value > maximum:
            raise ValidationError(too_large)

    return check


class QueryInteger(fields.Field):
    """A whole number written in a query string: ASCII digits, optional sign, nothing else."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs) -> int:
        if not isinstance(value, str) or QUERY_INTEGER_PATTERN.fullmatch(value) is None:
            raise ValidationError(NOT_AN_INTEGER)
        return int(value)


class StrictQueryInteger(fields.Field):
    """A whole number in its plain decimal form: ASCII digits without sign, spaces or leading
    zeros (GET /feed's own parameters; /messages keeps the first release's laxer parsing)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs) -> int:
        if not isinstance(value, str) or STRICT_INTEGER_PATTERN.fullmatch(value) is None:
            raise ValidationError(NOT_AN_INTEGER)
        return int(value)


class Cursor(fields.Field):
    """A next_cursor handed out by GET /messages, decoded into the position it stands for."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs) -> Position:
        try:
            return decode_cursor(value if isinstance(value, str) else "")
        except MalformedCursor:
            raise ValidationError(NOT_A_CURSOR) from None


class FeedPosition(fields.Field):
    """A `next` handed out by GET /feed, or `latest`: the position itself, or LATEST."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs) -> int | str:
        if value == LATEST:
            return LATEST
        try:
            return decode_position(value if isinstance(value, str) else "")
        except MalformedPosition:
            raise ValidationError(NOT_A_POSITION) from None


def error_detail(location: str, schema: Schema, messages: dict[str, list[str]]) -> list[dict]:
    order = [field.data_key or name for name, field in schema.fields.items()]
    keys = sorted(messages, key=lambda key: order.index(key) if key in order else len(order))
    return [
        {"loc": [location, key], "msg": message, "type": ERROR_TYPES.get(message, "value_error")}
        for key in keys
        for message in messages[key]
    ]
