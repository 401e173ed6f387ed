"""Whether the latest write transaction failed, shared by every worker of one server.

The memory is mapped before gunicorn forks (the master imports this module through the
settings), so a failure one worker meets makes every worker's readiness probe say so.
A sequence number around each update lets readers retry a torn read; writers take a
thread lock and a POSIX lock on an unlinked file (made before the fork too; the kernel
releases it when a holder dies, even by SIGKILL), so they never interleave, whichever
database is behind: PostgreSQL writers hold no lock in common otherwise.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import mmap
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_HEADER = struct.Struct("<QQdH")  # sequence, database key, failed at (monotonic), reason length
_MAX_REASON_BYTES = 512
_NO_FAILURE = 0.0
# Writers' lock, shared by every WriteHealth of the process and by its forked children.
_LOCK_FILE = tempfile.TemporaryFile()  # noqa: SIM115 - open for the life of the process
atexit.register(_LOCK_FILE.close)
_THREAD_LOCK = threading.Lock()


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
            self._write(key, _NO_FAILURE, "", only_if_key=key)

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

    def _write(self, key: int, failed_at: float, reason: str, only_if_key: int | None = None) -> None:
        encoded = reason.encode("utf-8", "replace")[:_MAX_REASON_BYTES]
        with self._exclusive():
            sequence, stored_key, _failed_at, _length = _HEADER.unpack_from(self._memory, 0)
            if only_if_key is not None and stored_key != only_if_key:
                return
            struct.pack_into("<Q", self._memory, 0, sequence + 1)
            self._memory[_HEADER.size : _HEADER.size + len(encoded)] = encoded
            _HEADER.pack_into(self._memory, 0, sequence + 1, key, failed_at, len(encoded))
            struct.pack_into("<Q", self._memory, 0, sequence + 2)

    @staticmethod
    @contextmanager
    def _exclusive() -> Iterator[None]:
        with _THREAD_LOCK:
            fcntl.lockf(_LOCK_FILE, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(_LOCK_FILE, fcntl.LOCK_UN)


# Made at import, in the gunicorn master, so that the workers it forks share it.
WRITE_HEALTH = WriteHealth()
