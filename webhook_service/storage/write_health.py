"""Whether the latest write transaction failed, shared by every worker of one server.

The memory is mapped before gunicorn forks (gunicorn.conf.py imports this module in the
master), so a failure one worker meets makes every worker's readiness probe say so. A
sequence number around each update lets readers retry a torn read (and then wait for the
writer, under its lock); writers take the
server's shared lock (storage/shared_memory.py), so they never interleave, whichever
database is behind: PostgreSQL writers hold no lock in common otherwise.
"""

from __future__ import annotations

import hashlib
import struct
import time
from dataclasses import dataclass

from webhook_service.storage.shared_memory import exclusive, shared_block

_HEADER = struct.Struct("<QQdH")  # sequence, database key, failed at (monotonic), reason length
_MAX_REASON_BYTES = 512
_NO_FAILURE = 0.0
# Reads tried without the lock before waiting for a writer to finish.
_OPTIMISTIC_READS = 100


def database_key(url: str) -> int:
    """A number naming the database, so that several databases in one process stay apart."""
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "little") or 1


@dataclass(frozen=True)
class WriteFailure:
    """Why the latest write failed, and how long ago."""

    reason: str
    seconds_ago: float


class WriteHealth:
    """The last failed write of a database, as (reason, seconds ago), until a write succeeds."""

    def __init__(self) -> None:
        self._memory = shared_block(_HEADER.size + _MAX_REASON_BYTES)

    def record_failure(self, key: int, reason: str) -> None:
        """Remember that a write to database `key` failed just now, and why."""
        self._write(key, time.monotonic(), reason)

    def record_success(self, key: int, began_at: float) -> None:
        """Forget a failure of database `key` that happened before `began_at` (time.monotonic()
        when the transaction that has now committed began). A failure while it ran stays: a
        readiness probe that waited for the lock behind a failing delivery must not clear it."""
        _sequence, stored_key, failed_at, _length = _HEADER.unpack_from(self._memory, 0)
        if stored_key == key and _NO_FAILURE != failed_at < began_at:
            self._write(key, _NO_FAILURE, "", only_if_key=key, only_if_before=began_at)

    def last_failure(self, key: int) -> WriteFailure | None:
        """The last failed write of database `key`, or None when the latest one committed."""
        for _ in range(_OPTIMISTIC_READS):
            sequence, stored_key, failed_at, reason = self._read()
            if sequence % 2 == 0 and _HEADER.unpack_from(self._memory, 0)[0] == sequence:
                break
        else:
            # A writer is in the middle of an update (on a loaded machine it may be descheduled
            # there): wait for it. Answering "no failure" here let a readiness probe clear a
            # failure being recorded at that moment and say ready while deliveries failed.
            with exclusive():
                _sequence, stored_key, failed_at, reason = self._read()
        if stored_key != key or failed_at == _NO_FAILURE:
            return None
        return WriteFailure(reason.decode("utf-8", "replace"), time.monotonic() - failed_at)

    def _read(self) -> tuple[int, int, float, bytes]:
        # (sequence, database key, failed at, reason): torn unless the sequence is even and
        # unchanged after the read, or the lock is held.
        sequence, stored_key, failed_at, length = _HEADER.unpack_from(self._memory, 0)
        reason = bytes(self._memory[_HEADER.size : _HEADER.size + min(length, _MAX_REASON_BYTES)])
        return sequence, stored_key, failed_at, reason

    def _write(
        self,
        key: int,
        failed_at: float,
        reason: str,
        only_if_key: int | None = None,
        only_if_before: float | None = None,
    ) -> None:
        encoded = reason.encode("utf-8", "replace")[:_MAX_REASON_BYTES]
        with exclusive():
            sequence, stored_key, stored_failed_at, _length = _HEADER.unpack_from(self._memory, 0)
            if only_if_key is not None and stored_key != only_if_key:
                return
            if only_if_before is not None and stored_failed_at >= only_if_before:
                return  # a failure recorded meanwhile
            struct.pack_into("<Q", self._memory, 0, sequence + 1)
            self._memory[_HEADER.size : _HEADER.size + len(encoded)] = encoded
            _HEADER.pack_into(self._memory, 0, sequence + 1, key, failed_at, len(encoded))
            struct.pack_into("<Q", self._memory, 0, sequence + 2)


# Made at import, in the gunicorn master, so that the workers it forks share it.
WRITE_HEALTH = WriteHealth()
