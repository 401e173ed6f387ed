"""Messages as Parquet files: one file per UTC day of created_at and run of positions,
`messages/day=YYYY-MM-DD/<first>-<last>.parquet`, so that DuckDB, Spark or pandas read the
folder as one table partitioned by day (`read_parquet('messages/*/*.parquet',
hive_partitioning = true)`)."""

from __future__ import annotations

import io
from collections.abc import Iterable
from itertools import groupby

import pyarrow as pa
import pyarrow.parquet as pq

from webhook_service.archive.stores import ArchiveFailed, ArchiveStore

# Strings as GET /messages returns them; text null where the sender sent none.
SCHEMA = pa.schema(
    [
        pa.field("position", pa.int64(), nullable=False),
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("from", pa.string(), nullable=False),
        pa.field("to", pa.string(), nullable=False),
        pa.field("ts", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=True),
        pa.field("created_at", pa.string(), nullable=False),
    ]
)
COLUMNS = tuple(SCHEMA.names)


ARCHIVE_PREFIX = "messages/"


def archive_key(day: str, first: int, last: int) -> str:
    """Where the messages of `day` at positions `first` to `last` go."""
    return f"{ARCHIVE_PREFIX}day={day}/{first}-{last}.parquet"


def to_parquet(rows: list[dict]) -> bytes:
    """Rows (a dict of COLUMNS each) as one Parquet file."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def read_archive(data: bytes) -> pa.Table:
    """A Parquet file's table."""
    return pq.read_table(io.BytesIO(data))


def archive_messages(store: ArchiveStore, rows: Iterable[dict]) -> int:
    """Write `rows` (COLUMNS each, in position order) as one file per UTC day of created_at,
    read each back and check its rows and ids; returns how many rows were archived. Raises
    ArchiveFailed: then some files may have been written, none is to be trusted yet, and
    the caller deletes nothing (writing the same rows again replaces the same files)."""
    archived = 0
    for day, of_day in groupby(sorted(rows, key=lambda row: (row["created_at"][:10], row["position"])), key=_day):
        batch = list(of_day)
        key = archive_key(day, batch[0]["position"], batch[-1]["position"])
        try:
            store.put(key, to_parquet(batch))
            back = read_archive(store.get(key))
        except Exception as error:
            raise ArchiveFailed(f"{store.describe()} {key}: {type(error).__name__}: {error}") from error
        if back.num_rows != len(batch) or back.column("message_id").to_pylist() != [row["message_id"] for row in batch]:
            raise ArchiveFailed(f"{store.describe()} {key}: read back {back.num_rows} rows, wrote {len(batch)}")
        archived += len(batch)
    return archived


def erase_number(store: ArchiveStore, number: str, dry_run: bool = False) -> tuple[int, int]:
    """Remove every archived message from or to `number` (E.164): each file that holds one is
    written again without them, whole (or removed when nothing is left). Returns (messages,
    files) it took them out of; with `dry_run`, only counts. Raises ArchiveFailed."""
    import pyarrow.compute as pc

    erased = files = 0
    for key in store.keys(ARCHIVE_PREFIX):
        if not key.endswith(".parquet"):
            continue
        try:
            table = read_archive(store.get(key))
            held = pc.or_(pc.equal(table.column("from"), number), pc.equal(table.column("to"), number))
            found = pc.sum(pc.cast(held, pa.int64())).as_py() or 0
            if not found:
                continue
            erased, files = erased + found, files + 1
            if dry_run:
                continue
            kept = table.filter(pc.invert(held))
            if kept.num_rows == 0:
                store.delete(key)
                continue
            buffer = io.BytesIO()
            pq.write_table(kept, buffer, compression="zstd")
            store.put(key, buffer.getvalue())
            if read_archive(store.get(key)).num_rows != kept.num_rows:
                raise ArchiveFailed(f"{store.describe()} {key}: did not read back as written")
        except ArchiveFailed:
            raise
        except Exception as error:
            raise ArchiveFailed(f"{store.describe()} {key}: {type(error).__name__}: {error}") from error
    return erased, files


def _day(row: dict) -> str:
    return row["created_at"][:10]
