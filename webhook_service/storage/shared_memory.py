"""Memory and a lock that every worker of one server shares.

Both are made when this module is first imported, which gunicorn.conf.py does in the
master, so that the workers it forks inherit them: anonymous shared mappings,
and a POSIX lock on an unlinked file that the kernel releases when a holder dies, even by
SIGKILL. Writers take the lock (and a thread lock: POSIX locks are per process).
"""

from __future__ import annotations

import atexit
import fcntl
import mmap
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK_FILE = tempfile.TemporaryFile()  # noqa: SIM115 - open for the life of the process
atexit.register(_LOCK_FILE.close)
_THREAD_LOCK = threading.Lock()


def shared_block(size: int) -> mmap.mmap:
    """`size` bytes of zeroed memory that processes forked after this call share."""
    return mmap.mmap(-1, size)


@contextmanager
def exclusive() -> Iterator[None]:
    """Held by one thread of one process of the server at a time."""
    with _THREAD_LOCK:
        fcntl.lockf(_LOCK_FILE, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(_LOCK_FILE, fcntl.LOCK_UN)
