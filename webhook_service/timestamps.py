"""The `ts` format: strict UTC ISO-8601 with a `Z`, and its sortable instant form."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# created_at and the other times the service writes itself: UTC, microseconds, a Z.
UTC_ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
TIMESTAMP_PATTERN = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z", re.ASCII)


def instant_key(value: str) -> str:
    """Return the instant `value` denotes as `YYYY-MM-DDTHH:MM:SS.fffffffffZ`.

    Equal instants give equal keys and keys sort as the instants do, whatever fraction
    precision the sender used. Raises ValueError for any other format or an impossible date.
    """
    match = TIMESTAMP_PATTERN.fullmatch(value)
    if match is None:
        raise ValueError("expected YYYY-MM-DDTHH:MM:SS[.fraction]Z")
    year, month, day, hour, minute, second, fraction = match.groups()
    # datetime rejects 2024-02-30, 25:00:00, leap seconds and year 0.
    datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    return f"{year}-{month}-{day}T{hour}:{minute}:{second}.{(fraction or '').ljust(9, '0')}Z"


def utc_now_iso() -> str:
    """The current UTC time as ISO-8601 with microseconds and a `Z`."""
    return datetime.now(UTC).strftime(UTC_ISO_FORMAT)


def iso_from_epoch(seconds: float) -> str:
    """Epoch seconds in the form utc_now_iso writes."""
    return datetime.fromtimestamp(seconds, UTC).strftime(UTC_ISO_FORMAT)


def epoch_from_iso(text: str) -> float:
    """Epoch seconds of a time utc_now_iso wrote; raises ValueError for another form."""
    return datetime.strptime(text, UTC_ISO_FORMAT).replace(tzinfo=UTC).timestamp()
