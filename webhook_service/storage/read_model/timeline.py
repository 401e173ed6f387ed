"""Messages counted by the hour and the day they were stored (created_at, UTC).

The counts live in timeline_counts and change with every insert and every purge, so a timeline reads one row per bucket, however many messages there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.read_model.kept_counts import KeptCounts
from webhook_service.storage.tables import timeline_counts

MAX_POINTS = 1000
BUCKET_SECONDS = {"hour": 3600, "day": 86400}
# created_at (and an instant key) is YYYY-MM-DDTHH:MM:SS...: this many characters name the bucket.
_PREFIX_CHARS = {"hour": 13, "day": 10}
_START_SUFFIX = {"hour": ":00:00Z", "day": "T00:00:00Z"}
_START_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class TooManyPoints(ValueError):
    """A range wider than MAX_POINTS buckets."""


@dataclass(frozen=True)
class BucketRange:
    """Buckets whose start is at or after `first` and before `end` (both bucket starts)."""

    bucket: str
    first: str
    end: str


def bucket_start(bucket: str, instant: str) -> str:
    """The start of the bucket holding `instant` (a created_at or an instant key)."""
    return instant[: _PREFIX_CHARS[bucket]] + _START_SUFFIX[bucket]


def bucket_range(bucket: str, since_key: str, until_key: str) -> BucketRange:
    """The buckets that overlap [since, until), two instant keys with since before until.
    Raises TooManyPoints past MAX_POINTS of them."""
    first, until_start = bucket_start(bucket, since_key), bucket_start(bucket, until_key)
    # A bucket that until falls inside is counted whole; one that starts at until is not.
    whole = _at_bucket_start(bucket, until_key)
    span = _parse_start(until_start) - _parse_start(first)
    points = span // timedelta(seconds=BUCKET_SECONDS[bucket]) + (0 if whole else 1)
    if points > MAX_POINTS:
        raise TooManyPoints(f"at most {MAX_POINTS} {bucket} buckets")
    # Past the bucket until falls in: its name followed by "~", which sorts after every
    # character a start has there and before the next bucket's name (no date arithmetic,
    # so the year 9999 needs no special case).
    end = until_start if whole else until_start[: _PREFIX_CHARS[bucket]] + "~"
    return BucketRange(bucket, first, end)


def _parse_start(start: str) -> datetime:
    return datetime.strptime(start, _START_FORMAT).replace(tzinfo=UTC)


def _at_bucket_start(bucket: str, instant_key: str) -> bool:
    rest = instant_key[_PREFIX_CHARS[bucket] :]
    return all(character in "0:.TZ" for character in rest)


TIMELINE = KeptCounts(
    "timeline_counts",
    (timeline_counts.c.bucket, timeline_counts.c.start),
    timeline_counts.c.message_count,
    lambda row: [(bucket, bucket_start(bucket, row["created_at"])) for bucket in BUCKET_SECONDS],
)


def read_timeline(conn: Connection, buckets: BucketRange) -> list[tuple[str, int]]:
    """(start, count) of every bucket in the range that holds messages, oldest first."""
    points = TIMELINE.entries(
        dialect_of(conn), (buckets.bucket,), lambda start: start >= buckets.first, lambda start: start < buckets.end
    )
    return [(row.key, int(row.n)) for row in conn.execute(points)]
