"""PostgreSQL's deferred counts: writes append their changes, one folder at a time folds them.

A count row that every write updates (the message total, a common gram, today's day count)
makes every writer wait for the one before it to commit. Here a write inserts one row of
count_changes holding all it changes ({counter: {key: n}}, jsonb), which no other write
touches; reads add the rows not folded yet to the count tables (storage/read_model/); and a
folder, holding a transaction-level advisory lock that writers never take, deletes the rows
it sees and adds their sums to the count tables in one transaction. A snapshot sees a change
either in count_changes or in the count tables, never in both and never in neither.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Text,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY

from webhook_service.storage.tables import count_changes

# The advisory lock a folder holds for its transaction (a fixed number naming this service's
# folder): a second folder skips its turn instead of waiting.
FOLD_LOCK_KEY = 0x77656268_6F6F6B02

_RECORD = postgresql.insert(count_changes)
# Up to :limit of the changes this transaction's snapshot sees (by their row address).
_SOME_CHANGES = text("SELECT ctid::text FROM count_changes LIMIT :limit")
# Those changes, deleted and summed by counter and key. Rows written by transactions still
# running are not seen, so not taken: a later fold takes them.
_TAKE_CHANGES = text(
    "WITH taken AS (DELETE FROM count_changes WHERE ctid = ANY(CAST(:rows AS tid[])) RETURNING changes) "
    "SELECT counter.key AS counter, entry.key AS key, sum(entry.value::bigint) AS n "
    "FROM taken, jsonb_each(taken.changes) AS counter, jsonb_each_text(counter.value) AS entry "
    "GROUP BY counter.key, entry.key HAVING sum(entry.value::bigint) <> 0"
)


def key_parameter(key) -> str:
    """The parameter that carries a key column's value in kept-count statements (a column's
    own name is reserved in the SET clause of an UPDATE)."""
    return f"k_{key.name}"


class DeferredCounts:
    """The SQL of deferred counts on PostgreSQL."""

    def __init__(self) -> None:
        self._folds: dict[str, object] = {}

    def record(self, conn: Connection, changes: dict[str, dict[str, int]]) -> None:
        """Append one write's changes, in its transaction."""
        conn.execute(_RECORD, {"changes": changes})

    def pending_value(self, counter: str, key: str):
        """The sum of the changes not folded yet at `counter` and `key`, a scalar expression."""
        value = func.jsonb_extract_path_text(count_changes.c.changes, counter, str(key))
        return select(func.coalesce(func.sum(cast(value, BigInteger)), 0)).scalar_subquery()

    def pending_entries(self, counter: str):
        """(key column, n column, from clause) of each key's change in each row not folded
        yet, at `counter`; keys compare code point by code point, like the count tables'."""
        entry = (
            func.jsonb_each_text(func.jsonb_extract_path(count_changes.c.changes, counter))
            .table_valued("key", "value")
            .lateral("entry")
        )
        return entry.c.key.collate("C"), cast(entry.c.value, BigInteger), count_changes.join(entry, true())

    def take_turn(self, conn: Connection) -> bool:
        """Whether this transaction may fold now (no other folder is in one)."""
        return bool(conn.execute(select(func.pg_try_advisory_xact_lock(FOLD_LOCK_KEY))).scalar_one())

    def take_changes(self, conn: Connection, limit: int) -> tuple[int, list[tuple[str, str, int]]]:
        """How many change rows were taken (at most `limit` of those this snapshot sees, deleted
        in the caller's transaction), and their (counter, key, n) summed, n not 0. Only the
        folder takes them (its turn is the advisory lock), so the rows found are still there."""
        rows = list(conn.execute(_SOME_CHANGES, {"limit": limit}).scalars())
        if not rows:
            return 0, []
        taken = conn.execute(_TAKE_CHANGES, {"rows": rows})
        return len(rows), [(row.counter, row.key, int(row.n)) for row in taken]

    def fold_counts(self, conn: Connection, keys: tuple, count, rows: list[dict]) -> tuple[int, int]:
        """Add each row's n to `count` at its key (key_parameter of each key column), creating
        rows as needed, then delete the rows this made 0; returns (created, deleted)."""
        table = count.table
        statement = self._folds.get(table.name)
        if statement is None:
            statement = self._folds[table.name] = _fold_statement(keys, count)
        parameters = {_array_parameter(key): [row[key_parameter(key)] for row in rows] for key in keys}
        parameters["counts"] = [row["n"] for row in rows]
        created = sum(1 for inserted in conn.execute(statement, parameters).scalars() if inserted)
        fallen = [tuple(row[key_parameter(key)] for key in keys) for row in rows if row["n"] < 0]
        if not fallen:
            return created, 0
        deleted = conn.execute(
            delete(table).where(count <= 0, tuple_(*keys).in_(fallen)).returning(literal_column("1"))
        ).all()
        return created, len(deleted)


def _fold_statement(keys: tuple, count):
    # INSERT ... SELECT unnest(...) ON CONFLICT DO UPDATE, telling which rows it created
    # (xmax is 0 only in a row version this statement inserted).
    columns = [func.unnest(bindparam(_array_parameter(key), type_=ARRAY(Text))).label(key.name) for key in keys]
    columns.append(func.unnest(bindparam("counts", type_=ARRAY(BigInteger))).label(count.name))
    statement = postgresql.insert(count.table).from_select([*(key.name for key in keys), count.name], select(*columns))
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={count.name: count + statement.excluded[count.name]}
    ).returning(literal_column("xmax = 0", Boolean))


def _array_parameter(key) -> str:
    return f"{key.name}_values"
