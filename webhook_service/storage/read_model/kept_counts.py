"""A table of counts by a key, derived from the stored messages and kept with every write.

Where one writer writes at a time (SQLite) a write changes the counts in place. Where writers
run in parallel (PostgreSQL, `Dialect.deferred`) no write updates a count row: each
appends its changes to count_changes, one process at a time folds them in (read_model.fold),
and a read adds the changes not folded yet to the rows it reads. Either way a read sees
exact counts in its snapshot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from itertools import chain

from sqlalchemy import Column, Connection, Select, and_, bindparam, delete, func, literal, select, union_all, update

from webhook_service.storage.dialects import Dialect, dialect_of
from webhook_service.storage.dialects.deferred_counts import key_parameter


class KeptCounts:
    """Counts in `count` by the key `keys` (its table's primary key, one column or several),
    and which keys a stored message adds one to (`keys_of(row)`, a row of the messages table
    as a dict). A key is a value, or a tuple of one value per column of `keys`. `kept_on`
    tells the dialects that keep these counts (every one unless told).

    In place, rows change in key order, so two writers lock them in one order, and a count
    at 0 is deleted. Deferred, the changes are `{counter: {last key value: n}}`, where the
    counter is `name` followed by the other key values (":hour" for the timeline's hours).
    """

    def __init__(
        self,
        name: str,
        keys: tuple[Column, ...],
        count: Column,
        keys_of: Callable[[dict], Iterable[Hashable]],
        kept_on: Callable[[Dialect], bool] = lambda dialect: True,
    ) -> None:
        self.name, self.keys, self.count, self.keys_of, self.kept_on = name, keys, count, keys_of, kept_on
        table = count.table
        matches = and_(*(key == bindparam(key_parameter(key)) for key in keys))
        self._subtract = update(table).where(matches).values({count.name: count - bindparam("n")})
        self._delete_empty = delete(table).where(matches, count <= 0)
        self._upserts: dict = {}

    def counted(self, rows: Iterable[dict]) -> Counter[Hashable]:
        """How much each key changes when `rows` are stored."""
        return Counter(chain.from_iterable(map(self.keys_of, rows)))

    # Writes.

    def add(self, conn: Connection, counts: Counter[Hashable]) -> None:
        """Add `counts` to the stored ones in place, in the caller's write transaction."""
        if counts:
            dialect = dialect_of(conn)
            dialect.add_counts(conn, self._upsert(dialect.insert), self.keys, self.count, self._rows(counts))

    def remove(self, conn: Connection, counts: Counter[Hashable]) -> None:
        """Subtract `counts` from the stored ones in place, in the caller's write transaction."""
        if counts:
            dialect, rows = dialect_of(conn), self._rows(counts)
            dialect.execute_many(conn, self._subtract, rows)
            dialect.execute_many(conn, self._delete_empty, rows)

    def changes(self, counts: Counter[Hashable], sign: int = 1) -> dict[str, dict[str, int]]:
        """`counts` (times `sign`) as deferred changes."""
        if len(self.keys) == 1:
            return {self.name: {key: sign * n for key, n in counts.items()}} if counts else {}
        changes: dict[str, dict[str, int]] = {}
        for key, n in counts.items():
            changes.setdefault(self.counter(key[:-1]), {})[key[-1]] = sign * n
        return changes

    def counter(self, leading: tuple = ()) -> str:
        """The deferred changes' counter for the keys that start with `leading` (every key
        column but the last)."""
        return ":".join((self.name, *leading))

    def fold(self, conn: Connection, counter: str, changes: dict[str, int]) -> tuple[int, int]:
        """Fold changes of `counter` into the table (deferred counts; the folder's
        transaction); returns how many rows it created and how many reached 0 and went."""
        leading = tuple(counter.split(":")[1:])
        rows = [{**self._key_parameters((*leading, key)), "n": n} for key, n in sorted(changes.items())]
        return dialect_of(conn).deferred.fold_counts(conn, self.keys, self.count, rows)

    # Reads: the stored rows, and where counts are deferred the changes not folded yet.

    def value(self, dialect: Dialect, key: Hashable) -> object:
        """The count at `key` (0 where there is none), as a scalar SQL expression."""
        values = key if isinstance(key, tuple) else (key,)
        stored = select(self.count).where(*(column == value for column, value in zip(self.keys, values, strict=True)))
        stored_or_none = func.coalesce(stored.scalar_subquery(), 0)
        if dialect.deferred is None:
            return stored_or_none
        return stored_or_none + dialect.deferred.pending_value(self.counter(values[:-1]), values[-1])

    def entries(self, dialect: Dialect, leading: tuple = (), *conditions_on_key) -> Select:
        """(key, n) of every key that starts with `leading` and whose last value meets
        `conditions_on_key` (functions of a column: the stored one, then the pending one), n
        not 0, in key order."""
        *fixed, last = self.keys
        stored = select(last.label("key"), self.count.label("n")).where(
            *(column == value for column, value in zip(fixed, leading, strict=True)),
            *(condition(last) for condition in conditions_on_key),
        )
        if dialect.deferred is None:
            return stored.order_by(last)
        pending_key, pending_n, pending_from = dialect.deferred.pending_entries(self.counter(leading))
        pending = (
            select(pending_key.label("key"), pending_n.label("n"))
            .select_from(pending_from)
            .where(*(condition(pending_key) for condition in conditions_on_key))
        )
        both = union_all(stored, pending).subquery()
        total = func.sum(both.c.n)
        return (
            select(both.c.key, total.label("n")).group_by(both.c.key).having(total != literal(0)).order_by(both.c.key)
        )

    def pending(self, dialect: Dialect, leading: tuple = ()) -> Select:
        """(key, n) of the changes not folded yet, summed by key, n not 0 (deferred counts)."""
        key, n, changes = dialect.deferred.pending_entries(self.counter(leading))
        total = func.sum(n)
        return select(key.label("key"), total.label("n")).select_from(changes).group_by(key).having(total != literal(0))

    def _key_parameters(self, key: tuple) -> dict:
        return {key_parameter(column): value for column, value in zip(self.keys, key, strict=True)}

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

    def _rows(self, counts: Counter[Hashable]) -> list[dict]:
        # One row of parameters per key, in key order.
        names = [key_parameter(key) for key in self.keys]
        if len(names) == 1:
            [name] = names
            return [{name: key, "n": counts[key]} for key in sorted(counts)]
        return [{**dict(zip(names, key, strict=True)), "n": counts[key]} for key in sorted(counts)]
