"""The readiness probe's write: one row rewritten with as many bytes as the largest delivery."""

from __future__ import annotations

from sqlalchemy import Connection

from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.tables import write_probe
from webhook_service.timestamps import utc_now_iso


def rewrite_probe_row(conn: Connection, size: int) -> None:
    """Write `size` bytes into the probe row; raises SQLAlchemyError when the database refuses.

    A full disk can still take a tiny write (the WAL reuses its space) while deliveries
    fail, so the probe is as large as a delivery may be.
    """
    statement = dialect_of(conn).insert(write_probe)
    conn.execute(
        statement.values(id=1, payload=bytes(size), written_at=utc_now_iso()).on_conflict_do_update(
            index_elements=[write_probe.c.id],
            set_={"payload": statement.excluded.payload, "written_at": statement.excluded.written_at},
        )
    )
