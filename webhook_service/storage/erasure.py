"""Erasure of a person's data: every message from or to one number, from the database and
from the deliveries still owed for them (the archives: archive/parquet.erase_number)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, or_, select

from webhook_service.storage.engine import Database
from webhook_service.storage.retention import SERVICE_PACE, remove_positions
from webhook_service.storage.tables import messages

# Messages removed per write transaction: short ones, as the service's own retention runs.
BATCH = SERVICE_PACE.batch


@dataclass(frozen=True)
class ErasureResult:
    """What an erasure removed: messages, and deliveries owed for them."""

    messages: int
    deliveries_ended: int


def positions_of_number(conn: Connection, number: str) -> list[int]:
    """The positions of every message from or to `number` (E.164)."""
    found = select(messages.c.id).where(or_(messages.c.from_msisdn == number, messages.c.to_msisdn == number))
    return list(conn.execute(found.order_by(messages.c.id)).scalars())


def erase_number(
    database: Database, number: str, dry_run: bool = False, progress: Callable[[int], None] | None = None
) -> ErasureResult:
    """Remove every message from or to `number`, in batches of short write transactions (the
    counts stay exact, deliveries owed for them end); with `dry_run`, only count them.
    Raises what the database raised (the batches before stay removed: run it again)."""
    with database.read_transaction() as conn:
        positions = positions_of_number(conn, number)
    if dry_run:
        return ErasureResult(len(positions), 0)
    removed = ended = 0
    for start in range(0, len(positions), BATCH):
        with database.write_transaction() as conn:
            batch, owed = remove_positions(conn, positions[start : start + BATCH])
        removed, ended = removed + batch, ended + owed
        if progress is not None:
            progress(batch)
    return ErasureResult(removed, ended)
