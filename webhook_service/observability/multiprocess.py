"""Keeping the multiprocess metrics folder small: a dead worker's counters are folded into
one archive file per metric type, so scrapes read a few files however often workers die.

Folding and scraping hold a lock file in the folder (exclusive and shared), so a scrape
never sees a dead worker's values twice (archive and its own file) or not at all.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client.mmap_dict import MmapedDict

# Counter and histogram values only ever add up; gauges are handled by mark_process_dead.
FOLDED_TYPES = ("counter", "histogram")
LOCK_FILE_NAME = "fold.lock"


@contextmanager
def folder_lock(directory: str, exclusive: bool) -> Iterator[None]:
    """Hold the folder's fold lock: exclusive to fold, shared to collect."""
    fd = os.open(os.path.join(directory, LOCK_FILE_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


# A values file starts with the 4-byte count of bytes used and 4 bytes of padding.
_HEADER_BYTES = 8


def fold_dead_worker(directory: str, pid: int) -> None:
    """Add the dead worker `pid`'s counter and histogram values to the archives and remove its files."""
    with folder_lock(directory, exclusive=True):
        for kind in FOLDED_TYPES:
            dead_path = os.path.join(directory, f"{kind}_{pid}.db")
            if not os.path.exists(dead_path):
                continue
            if os.path.getsize(dead_path) < _HEADER_BYTES:
                # Killed while creating it (prometheus_client makes the file, then sizes it):
                # it holds nothing, and reading it would fail the master's child_exit hook.
                os.remove(dead_path)
                continue
            values = list(MmapedDict.read_all_values_from_file(dead_path))
            archive = MmapedDict(os.path.join(directory, f"{kind}_archive.db"))
            try:
                for key, value, timestamp, _position in values:
                    current, _ = archive.read_value(key)
                    archive.write_value(key, current + value, timestamp)
            finally:
                archive.close()
            os.remove(dead_path)
