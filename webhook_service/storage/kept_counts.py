"""A table of counts by a key, kept in the transaction of every write that changes them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

from sqlalchemy import Column, Connection, and_, bindparam, delete, update

from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.dialects.base import key_parameter


class KeptCounts:
    """Counts in `count` by the key `keys` (its table's primary key, one column or several):
    added by upsert, subtracted, and deleted when they reach 0. Rows change in key order, so
    two writers lock them in one order. A key is a value, or a tuple of one value per column
    of `keys`; statements take one parameter per key column (see key_parameter) and n."""

    def __init__(self, keys: tuple[Column, ...], count: Column) -> None:
        self.keys, self.count = keys, count
        table = count.table
        matches = and_(*(key == bindparam(key_parameter(key)) for key in keys))
        self._subtract = update(table).where(matches).values({count.name: count - bindparam("n")})
        self._delete_empty = delete(table).where(matches, count <= 0)
        self._upserts: dict = {}

    def _upsert(self, insert):
        # One statement per database's INSERT construct, made on first use.
        statement = self._upserts.get(insert)
        if statement is None:
            columns = {key.name: bindparam(key_parameter(key)) for key in self.keys}
            values = insert(self.count.table).values({**columns, self.count.name: bindparam("n")})
            statement = values.on_conflict_do_update(
                index_elements=list(self.keys), set_={self.count.name: self.count + values.excluded[self.count.name]}
            )
            self._upserts[insert] = statement
        return statement

    def add(self, conn: Connection, counts: Counter[Hashable]) -> None:
        """Add `counts` to the stored ones, in the caller's write transaction."""
        if counts:
            dialect = dialect_of(conn)
            dialect.add_counts(conn, self._upsert(dialect.insert), self.keys, self.count, self._rows(counts))

    def remove(self, conn: Connection, counts: Counter[Hashable]) -> None:
        """Subtract `counts` from the stored ones, in the caller's write transaction."""
        if counts:
            dialect, rows = dialect_of(conn), self._rows(counts)
            dialect.execute_many(conn, self._subtract, rows)
            dialect.execute_many(conn, self._delete_empty, rows)

    def _rows(self, counts: Counter[Hashable]) -> list[dict]:
        # One row of parameters per key, in key order.
        names = [key_parameter(key) for key in self.keys]
        if len(names) == 1:
            [name] = names
            return [{name: key, "n": counts[key]} for key in sorted(counts)]
        return [{**dict(zip(names, key, strict=True)), "n": counts[key]} for key in sorted(counts)]
