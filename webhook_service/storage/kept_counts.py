"""A table of counts by one key, kept in the transaction of every write that changes them."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Column, Connection, bindparam, delete, update

from webhook_service.storage.dialects import dialect_of


class KeptCounts:
    """Counts in `count` by `key` (its table's primary key): added by upsert, subtracted, and
    deleted when they reach 0. Rows change in key order, so two writers lock them in one order."""

    def __init__(self, key: Column, count: Column) -> None:
        self.key, self.count = key, count
        table = key.table
        self._subtract = update(table).where(key == bindparam("k")).values({count.name: count - bindparam("n")})
        self._delete_empty = delete(table).where(key == bindparam("k"), count <= 0)
        self._upserts: dict = {}

    def _upsert(self, insert):
        # One statement per database's INSERT construct, made on first use.
        statement = self._upserts.get(insert)
        if statement is None:
            values = insert(self.key.table).values({self.key.name: bindparam("k"), self.count.name: bindparam("n")})
            statement = values.on_conflict_do_update(
                index_elements=[self.key], set_={self.count.name: self.count + values.excluded[self.count.name]}
            )
            self._upserts[insert] = statement
        return statement

    def add(self, conn: Connection, counts: Counter[str]) -> None:
        """Add `counts` to the stored ones, in the caller's write transaction."""
        if counts:
            dialect = dialect_of(conn)
            dialect.add_counts(conn, self._upsert(dialect.insert), self.key, self.count, _rows(counts))

    def remove(self, conn: Connection, counts: Counter[str]) -> None:
        """Subtract `counts` from the stored ones, in the caller's write transaction."""
        if counts:
            dialect, rows = dialect_of(conn), _rows(counts)
            dialect.execute_many(conn, self._subtract, rows)
            dialect.execute_many(conn, self._delete_empty, rows)


def _rows(counts: Counter[str]) -> list[dict]:
    # Parameters k (key) and n (count), in key order.
    return [{"k": key, "n": counts[key]} for key in sorted(counts)]
