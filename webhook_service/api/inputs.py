"""marshmallow schemas for every request, made once: the webhook payload and the queries of
/messages, /feed and /stats/timeline, and the functions the views load them with. Their
fields' checks and error messages are api/validation.py's.

Validation failures are reported as FastAPI-style error lists
(`{"loc": [...], "msg": ..., "type": ...}`) so clients of the original API keep working.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validates_schema
from werkzeug.datastructures import MultiDict

from webhook_service.api.errors import RequestValidationError
from webhook_service.api.validation import (
    DEFAULT_FEED_LIMIT,
    DEFAULT_LIMIT,
    E164_DOCUMENTED,
    FEED_LIMIT_TOO_LARGE,
    FIELD_REQUIRED,
    LIMIT_TOO_LARGE,
    LIMIT_TOO_SMALL,
    MAX_FEED_LIMIT,
    MAX_FEED_WAIT_SECONDS,
    MAX_LIMIT,
    MAX_MESSAGE_ID_CHARS,
    MAX_OFFSET,
    MAX_QUERY_TEXT_CHARS,
    MAX_TEXT_CHARS,
    MESSAGE_ID_TOO_LONG,
    NOT_A_POSITION,
    OFFSET_TOO_LARGE,
    OFFSET_TOO_SMALL,
    OFFSET_WITH_CURSOR,
    QUERY_TEXT_TOO_LONG,
    SINCE_NOT_IN_THE_PAST,
    STRING_ERRORS,
    TEXT_TOO_LONG,
    TOO_MANY_POINTS,
    TS_DOCUMENTED,
    UNTIL_NOT_AFTER_SINCE,
    WAIT_TOO_LARGE,
    WAIT_TOO_SMALL,
    Cursor,
    FeedPosition,
    QueryInteger,
    StrictQueryInteger,
    bucket,
    e164,
    error_detail,
    int_range,
    max_chars,
    not_blank,
    timestamp,
    unicode_text,
)
from webhook_service.storage.cursor import Position
from webhook_service.storage.messages import MessageFilter, NewMessage
from webhook_service.storage.read_model.timeline import (
    BUCKET_SECONDS,
    BucketRange,
    TooManyPoints,
    bucket_range,
)
from webhook_service.timestamps import instant_key, utc_now_iso


class WebhookMessageSchema(Schema):
    """The signed JSON body of POST /webhook. Unknown fields are ignored."""

    class Meta:
        unknown = EXCLUDE

    message_id = fields.String(
        required=True,
        validate=[not_blank, max_chars(MAX_MESSAGE_ID_CHARS, MESSAGE_ID_TOO_LONG), unicode_text],
        error_messages=STRING_ERRORS,
        metadata={
            "minLength": 1,
            "maxLength": MAX_MESSAGE_ID_CHARS,
            "description": "At least one non-space character. Deliveries are idempotent on it: the first wins.",
        },
    )
    from_ = fields.String(
        data_key="from", required=True, validate=e164, error_messages=STRING_ERRORS, metadata=E164_DOCUMENTED
    )
    to = fields.String(required=True, validate=e164, error_messages=STRING_ERRORS, metadata=E164_DOCUMENTED)
    ts = fields.String(required=True, validate=timestamp, error_messages=STRING_ERRORS, metadata=TS_DOCUMENTED)
    text = fields.String(
        load_default=None,
        allow_none=True,
        validate=[max_chars(MAX_TEXT_CHARS, TEXT_TOO_LONG), unicode_text],
        error_messages=STRING_ERRORS,
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
        validate=int_range(1, MAX_LIMIT, LIMIT_TOO_SMALL, LIMIT_TOO_LARGE),
        metadata={"minimum": 1, "maximum": MAX_LIMIT},
    )
    offset = QueryInteger(
        load_default=0,
        validate=int_range(0, MAX_OFFSET, OFFSET_TOO_SMALL, OFFSET_TOO_LARGE),
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
        validate=timestamp,
        metadata={**TS_DOCUMENTED, "description": "Messages at or after this instant. " + TS_DOCUMENTED["description"]},
    )
    q = fields.String(
        load_default=None,
        validate=max_chars(MAX_QUERY_TEXT_CHARS, QUERY_TEXT_TOO_LONG),
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
        validate=int_range(1, MAX_FEED_LIMIT, LIMIT_TOO_SMALL, FEED_LIMIT_TOO_LARGE),
        metadata={"minimum": 1, "maximum": MAX_FEED_LIMIT},
    )
    wait = StrictQueryInteger(
        load_default=0,
        validate=int_range(0, MAX_FEED_WAIT_SECONDS, WAIT_TOO_SMALL, WAIT_TOO_LARGE),
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
        validate=bucket,
        error_messages={"required": FIELD_REQUIRED},
        metadata={"enum": sorted(BUCKET_SECONDS), "description": "Count by the hour or by the day (UTC)."},
    )
    since = fields.String(
        required=True,
        validate=timestamp,
        error_messages={"required": FIELD_REQUIRED},
        metadata={
            **TS_DOCUMENTED,
            "description": "The bucket holding this instant is the first. " + TS_DOCUMENTED["description"],
        },
    )
    until = fields.String(
        load_default=None,
        validate=timestamp,
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
        raise RequestValidationError(error_detail("body", webhook_message_schema, exc.messages)) from None


def _load_query(schema: Schema, args: MultiDict[str, str]):
    # A repeated parameter counts by its last value.
    try:
        return schema.load({key: args.getlist(key)[-1] for key in args})
    except ValidationError as exc:
        raise RequestValidationError(error_detail("query", schema, exc.messages)) from None


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
