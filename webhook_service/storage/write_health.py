"""Whether the latest write transaction failed, shared by every worker of one server.

The memory is mapped before gunicorn forks (the master imports this module through the
settings), so a failure one worker meets makes every worker's readiness probe say so.
A sequence number around each update lets readers retry a torn read; writers update it
while they hold the database's writer lock, so they never interleave.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
import time

_HEADER = struct.Struct("<QQdH")  # sequence, database key, failed at (monotonic), reason length
_MAX_REASON_BYTES = 512
_NO_FAILURE = 0.0


def database_key(url: str) -> int:
    """A number naming the database, so that several databases in one process stay apart."""
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "little") or 1


class WriteHealth:
    """The last failed write of a database, as (reason, seconds ago), until a write succeeds."""

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, _HEADER.size + _MAX_REASON_BYTES)

    def record_failure(self, key: int, reason: str) -> None:
        """Remember that a write to database `key` failed just now, and why."""
        self._write(key, time.monotonic(), reason)

    def record_success(self, key: int) -> None:
        """Forget a failure of database `key`: a write has committed since."""
        _sequence, stored_key, failed_at, _length = _HEADER.unpack_from(self._memory, 0)
        if stored_key == key and failed_at != _NO_FAILURE:
            self._write(key, _NO_FAILURE, "")

    def last_failure(self, key: int) -> tuple[str, float] | None:
        """The reason of the last failed write of database `key` and its age in seconds, or None."""
        for _ in range(100):
            sequence, stored_key, failed_at, length = _HEADER.unpack_from(self._memory, 0)
            reason = bytes(self._memory[_HEADER.size : _HEADER.size + min(length, _MAX_REASON_BYTES)])
            if sequence % 2 == 0 and _HEADER.unpack_from(self._memory, 0)[0] == sequence:
                if stored_key != key or failed_at == _NO_FAILURE:
                    return None
                return reason.decode("utf-8", "replace"), time.monotonic() - failed_at
        return None

    def _write(self, key: int, failed_at: float, reason: str) -> None:
        encoded = reason.encode("utf-8", "replace")[:_MAX_REASON_BYTES]
        sequence = _HEADER.unpack_from(self._memory, 0)[0]
        struct.pack_into("<Q", self._memory, 0, sequence + 1)
        self._memory[_HEADER.size : _HEADER.size + len(encoded)] = encoded
        _HEADER.pack_into(self._memory, 0, sequence + 1, key, failed_at, len(encoded))
        struct.pack_into("<Q", self._memory, 0, sequence + 2)


# Made at import, in the gunicorn master, so that the workers it forks share it.
WRITE_HEALTH = WriteHealth()
