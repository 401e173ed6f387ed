"""marshmallow schemas for every request, made once: the webhook payload and the queries of
/messages, /feed and /stats/timeline.

Validation failures are reported as FastAPI-style error lists
(`{"loc": [...], "msg": ..., "type": ...}`) so clients of the original API keep working.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validates_schema
from werkzeug.datastructures import MultiDict

from webhook_service.api.errors import RequestValidationError
from webhook_service.storage.cursor import MalformedCursor, Position, decode_cursor
from webhook_service.storage.feed import LATEST, MalformedPosition, decode_position
from webhook_service.storage.messages import MessageFilter, NewMessage
from webhook_service.storage.read_model.timeline import (
    BUCKET_SECONDS,
    MAX_POINTS,
    BucketRange,
    TooManyPoints,
    bucket_range,
)
from webhook_service.timestamps import instant_key, utc_now_iso

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

_STRING_ERRORS = {"required": FIELD_REQUIRED, "null": NOT_A_STRING, "invalid": NOT_A_STRING}


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError(BLANK_STRING)


def _unicode_text(value: str) -> None:
    # JSON can escape lone surrogates ("\ud800"), which are not text and cannot be stored.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(NOT_UNICODE) from None


def _e164(value: str) -> None:
    if E164_PATTERN.fullmatch(value) is None:
        raise ValidationError(NOT_E164)


def _timestamp(value: str) -> None:
    try:
        instant_key(value)
    except ValueError:
        raise ValidationError(NOT_A_TIMESTAMP) from None


def _bucket(value: str) -> None:
    if value not in BUCKET_SECONDS:
        raise ValidationError(NOT_A_BUCKET)


def _max_chars(limit: int, message: str):
    def check(value: str) -> None:
        if len(value) > limit:
            raise ValidationError(message)

    return check


def _int_range(minimum: int, maximum: int, too_small: str, too_large: str):
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


class WebhookMessageSchema(Schema):
    """The signed JSON body of POST /webhook. Unknown fields are ignored."""

    class Meta:
        unknown = EXCLUDE

    message_id = fields.String(
        required=True,
        validate=[_not_blank, _max_chars(MAX_MESSAGE_ID_CHARS, MESSAGE_ID_TOO_LONG), _unicode_text],
        error_messages=_STRING_ERRORS,
        metadata={
            "minLength": 1,
            "maxLength": MAX_MESSAGE_ID_CHARS,
            "description": "At least one non-space character. Deliveries are idempotent on it: the first wins.",
        },
    )
    from_ = fields.String(
        data_key="from", required=True, validate=_e164, error_messages=_STRING_ERRORS, metadata=E164_DOCUMENTED
    )
    to = fields.String(required=True, validate=_e164, error_messages=_STRING_ERRORS, metadata=E164_DOCUMENTED)
    ts = fields.String(required=True, validate=_timestamp, error_messages=_STRING_ERRORS, metadata=TS_DOCUMENTED)
    text = fields.String(
        load_default=None,
        allow_none=True,
        validate=[_max_chars(MAX_TEXT_CHARS, TEXT_TOO_LONG), _unicode_text],
        error_messages=_STRING_ERRORS,
        metadata={"maxLength": MAX_TEXT_CHARS, "description": "Optional; at most 4096 characters (not bytes)."},
    )

    @post_load
    def to_new_message(self, data: dict[str, Any], **kwargs) -> NewMessage:
        return NewMessage(
            message_id=data["message_id"],
            sender=data["from_"],
            recipient=data["to"],
            ts=data["ts"],
            text=data["text"],
        )


@dataclass(frozen=True)
class MessagesQuery:
    """A validated GET /messages query."""

    message_filter: MessageFilter
    limit: int
    offset: int
    cursor: Position | None


class MessagesQuerySchema(Schema):
    """The query string of GET /messages. Unknown parameters are ignored."""

    class Meta:
        unknown = EXCLUDE

    limit = QueryInteger(
        load_default=DEFAULT_LIMIT,
        validate=_int_range(1, MAX_LIMIT, LIMIT_TOO_SMALL, LIMIT_TOO_LARGE),
        metadata={"minimum": 1, "maximum": MAX_LIMIT},
    )
    offset = QueryInteger(
        load_default=0,
        validate=_int_range(0, MAX_OFFSET, OFFSET_TOO_SMALL, OFFSET_TOO_LARGE),
        metadata={"minimum": 0, "maximum": MAX_OFFSET, "description": "0 or absent when cursor is given."},
    )
    from_ = fields.String(
        data_key="from",
        load_default=None,
        metadata={
            "description": "Exact sender; a leading space (an unencoded +) reads as +.",
            "example": "+919876543210",
        },
    )
    since = fields.String(
        load_default=None,
        validate=_timestamp,
        metadata={**TS_DOCUMENTED, "description": "Messages at or after this instant. " + TS_DOCUMENTED["description"]},
    )
    q = fields.String(
        load_default=None,
        validate=_max_chars(MAX_QUERY_TEXT_CHARS, QUERY_TEXT_TOO_LONG),
        metadata={
            "maxLength": MAX_QUERY_TEXT_CHARS,
            "description": "Case-insensitive substring of text, for all of Unicode; % _ and \\ are ordinary characters.",
        },
    )
    cursor = Cursor(
        load_default=None,
        metadata={"description": "next_cursor of the previous page, as it was (opaque).", "type": "string"},
    )

    @validates_schema
    def offset_or_cursor(self, data: dict[str, Any], **kwargs) -> None:
        if data.get("cursor") is not None and data.get("offset"):
            raise ValidationError(OFFSET_WITH_CURSOR, field_name="offset")

    @post_load
    def to_query(self, data: dict[str, Any], **kwargs) -> MessagesQuery:
        sender = data["from_"] or None
        # An unencoded `+` in a query string arrives as a space.
        if sender is not None and sender.startswith(" "):
            sender = "+" + sender[1:]
        return MessagesQuery(
            message_filter=MessageFilter(sender=sender, since=data["since"], text_contains=data["q"] or None),
            limit=data["limit"],
            offset=data["offset"],
            cursor=data["cursor"],
        )


@dataclass(frozen=True)
class FeedQuery:
    """A validated GET /feed query: `after` a position, LATEST, or None for the beginning."""

    after: int | str | None
    limit: int
    wait_seconds: int


class FeedQuerySchema(Schema):
    """The query string of GET /feed. Unknown parameters are ignored."""

    class Meta:
        unknown = EXCLUDE

    after = FeedPosition(
        load_default=None,
        metadata={
            "type": "string",
            "description": "`next` of an earlier answer, as it was (opaque); `latest` for the feed's current end; "
            "absent for its beginning.",
            "example": "latest",
        },
    )
    limit = StrictQueryInteger(
        load_default=DEFAULT_FEED_LIMIT,
        validate=_int_range(1, MAX_FEED_LIMIT, LIMIT_TOO_SMALL, FEED_LIMIT_TOO_LARGE),
        metadata={"minimum": 1, "maximum": MAX_FEED_LIMIT},
    )
    wait = StrictQueryInteger(
        load_default=0,
        validate=_int_range(0, MAX_FEED_WAIT_SECONDS, WAIT_TOO_SMALL, WAIT_TOO_LARGE),
        metadata={
            "minimum": 0,
            "maximum": MAX_FEED_WAIT_SECONDS,
            "description": "Seconds to hold the request when nothing follows `after`, until a message is stored.",
        },
    )

    @post_load
    def to_query(self, data: dict[str, Any], **kwargs) -> FeedQuery:
        return FeedQuery(after=data["after"], limit=data["limit"], wait_seconds=data["wait"])


class TimelineQuerySchema(Schema):
    """The query string of GET /stats/timeline. Unknown parameters are ignored."""

    class Meta:
        unknown = EXCLUDE

    bucket = fields.String(
        required=True,
        validate=_bucket,
        error_messages={"required": FIELD_REQUIRED},
        metadata={"enum": sorted(BUCKET_SECONDS), "description": "Count by the hour or by the day (UTC)."},
    )
    since = fields.String(
        required=True,
        validate=_timestamp,
        error_messages={"required": FIELD_REQUIRED},
        metadata={
            **TS_DOCUMENTED,
            "description": "The bucket holding this instant is the first. " + TS_DOCUMENTED["description"],
        },
    )
    until = fields.String(
        load_default=None,
        validate=_timestamp,
        metadata={
            **TS_DOCUMENTED,
            "description": "Buckets that start before this instant (default: now). " + TS_DOCUMENTED["description"],
        },
    )

    @post_load
    def to_range(self, data: dict[str, Any], **kwargs) -> BucketRange:
        since_key = instant_key(data["since"])
        until_key = instant_key(data["until"] or utc_now_iso())
        if until_key <= since_key:
            if data["until"] is None:
                raise ValidationError(SINCE_NOT_IN_THE_PAST, field_name="since")
            raise ValidationError(UNTIL_NOT_AFTER_SINCE, field_name="until")
        try:
            return bucket_range(data["bucket"], since_key, until_key)
        except TooManyPoints:
            raise ValidationError(TOO_MANY_POINTS, field_name="since") from None


webhook_message_schema = WebhookMessageSchema()
messages_query_schema = MessagesQuerySchema()
feed_query_schema = FeedQuerySchema()
timeline_query_schema = TimelineQuerySchema()


def _detail(location: str, schema: Schema, messages: dict[str, list[str]]) -> list[dict]:
    order = [field.data_key or name for name, field in schema.fields.items()]
    keys = sorted(messages, key=lambda key: order.index(key) if key in order else len(order))
    return [
        {"loc": [location, key], "msg": message, "type": ERROR_TYPES.get(message, "value_error")}
        for key in keys
        for message in messages[key]
    ]


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Decode a body as a UTF-8 JSON object, whatever its Content-Type said.

    Raises RequestValidationError when it is not UTF-8, not JSON, or not an object.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestValidationError(
            [{"loc": ["body", exc.start], "msg": "Body is not valid UTF-8", "type": "json_invalid"}]
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"loc": ["body", exc.pos], "msg": "JSON decode error", "type": "json_invalid", "ctx": {"error": exc.msg}}]
        ) from None
    except (ValueError, RecursionError):
        # Nesting too deep to parse, or an integer with too many digits.
        raise RequestValidationError([{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]) from None
    if not isinstance(document, dict):
        raise RequestValidationError(
            [{"loc": ["body"], "msg": "Input should be a valid JSON object", "type": "model_attributes_type"}]
        )
    return document


# (key in the body, name in the schema, required, null allowed, validators) of each field,
# taken from the schema itself: the quick check below runs exactly the schema's validators.
_WEBHOOK_FIELD_CHECKS = tuple(
    (field.data_key or name, name, field.required, field.allow_none, tuple(field.validators))
    for name, field in webhook_message_schema.fields.items()
)
_ONLY_STRING_FIELDS = all(type(field) is fields.String for field in webhook_message_schema.fields.values())


def _valid_without_errors(document: Mapping[str, Any]) -> NewMessage | None:
    """The message when every field passes the schema's own checks, else None.

    The schema's type rule (a string, or null where allowed) and its validators, without
    building error reports: most deliveries are valid, and this takes a fraction of the
    schema's time. Anything it does not accept goes through the schema, which decides and
    explains.
    """
    if not _ONLY_STRING_FIELDS:
        return None
    values = {}
    for key, name, required, allow_none, validators in _WEBHOOK_FIELD_CHECKS:
        value = document.get(key)
        if value is None:
            if required or (key in document and not allow_none):
                return None
        elif type(value) is not str:
            return None
        else:
            try:
                for validate in validators:
                    validate(value)
            except ValidationError:
                return None
        values[name] = value
    return webhook_message_schema.to_new_message(values)


def load_webhook_message(document: Mapping[str, Any]) -> NewMessage:
    """Validate a parsed webhook body; raises RequestValidationError listing every bad field."""
    message = _valid_without_errors(document)
    if message is not None:
        return message
    try:
        return webhook_message_schema.load(document)
    except ValidationError as exc:
        raise RequestValidationError(_detail("body", webhook_message_schema, exc.messages)) from None


def _load_query(schema: Schema, args: MultiDict[str, str]):
    # A repeated parameter counts by its last value.
    try:
        return schema.load({key: args.getlist(key)[-1] for key in args})
    except ValidationError as exc:
        raise RequestValidationError(_detail("query", schema, exc.messages)) from None


def load_messages_query(args: MultiDict[str, str]) -> MessagesQuery:
    """Validate /messages query parameters into limit, offset and a MessageFilter.

    Raises RequestValidationError listing every bad parameter.
    """
    return _load_query(messages_query_schema, args)


def position_beyond_end() -> RequestValidationError:
    """The 422 for an `after` past the feed's end: a position the feed never handed out."""
    return RequestValidationError([{"loc": ["query", "after"], "msg": NOT_A_POSITION, "type": "value_error"}])


def load_feed_query(args: MultiDict[str, str]) -> FeedQuery:
    """Validate /feed query parameters; raises RequestValidationError listing every bad one."""
    return _load_query(feed_query_schema, args)


def load_timeline_query(args: MultiDict[str, str]) -> BucketRange:
    """Validate /stats/timeline query parameters; raises RequestValidationError listing every bad one."""
    return _load_query(timeline_query_schema, args)
