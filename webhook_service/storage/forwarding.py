"""The forwarder's state, written once for every database: a feed position per destination,
and a row per message not yet delivered (leased while it is tried, or a dead letter).

A destination's backlog is the feed after its position. Messages are taken from it in
batches: the destination's row is locked, the batch's messages that the destination's match
keeps get rows leased to the forwarder that took it, and the position moves past it, in one
transaction. So several forwarders of one destination (PostgreSQL hosts) never take the same
message at once, and a forwarder killed at any moment leaves only leased rows behind, which
expire and are tried again.

With an order, each row carries its message's key, and a pending row is taken only when no
pending row of its key has an earlier position: the next message of a key waits, in the
database, for the one before it to be delivered (its row goes) or dead-lettered, whichever
forwarder holds it and across restarts and replays.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection, and_, delete, exists, func, insert, not_, or_, select, update

from webhook_service.storage.dialects import dialect_of
from webhook_service.storage.feed import BEGINNING, latest_position, messages_after
from webhook_service.storage.messages import PAGE_COLUMNS, StoredMessage, stored_message
from webhook_service.storage.tables import forward_deliveries, forward_destinations, messages
from webhook_service.timestamps import instant_key, iso_from_epoch, utc_now_iso

PENDING = "pending"
DEAD = "dead"
START_LATEST = "latest"
START_BEGINNING = "beginning"


# Rows a replay chooses are read and written this many at a time.
REPLAY_CHUNK = 1000


class DeliveryPolicy(Protocol):
    """Which messages a destination is owed, and the key that orders them (None: unordered)."""

    def keeps(self, message: StoredMessage) -> bool: ...

    def key(self, message: StoredMessage) -> str | None: ...


class _EveryMessage:
    def keeps(self, message: StoredMessage) -> bool:
        return True

    def key(self, message: StoredMessage) -> str | None:
        return None


EVERY_MESSAGE = _EveryMessage()


class UnknownDestination(LookupError):
    """No forwarder has served a destination of that name on this database."""


@dataclass(frozen=True)
class Claimed:
    """A message leased to this forwarder: its position, the attempts made so far, when it was
    queued, and the message (None when it was purged since)."""

    position: int
    attempts: int
    queued_at: float
    message: StoredMessage | None


@dataclass(frozen=True)
class Outcome:
    """What an attempt came to: delivered (the row goes), or tried again later / dead."""

    position: int
    delivered: bool
    attempts: int = 0
    dead: bool = False
    next_attempt_at: float = 0.0
    status: int | None = None
    error: str | None = None
    finished_at: float = 0.0


@dataclass(frozen=True)
class DeliveryState:
    """A delivery still owed: waiting to be tried again, or a dead letter."""

    message_id: str | None
    position: int
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    last_attempt_at: str | None
    next_attempt_at: str | None = None


def register_destination(conn: Connection, name: str, start: str, policy: dict | None = None) -> int:
    """Make sure the destination has a position (the feed's end, or its beginning, the first
    time) and note the match and order it is served with (`policy`, as JSON); returns its
    position. Run in a write transaction."""
    document = None if policy is None else json.dumps(policy, sort_keys=True)
    position = _position_of(conn, name)
    if position is None:
        position = latest_position(conn) if start == START_LATEST else BEGINNING
        statement = (
            dialect_of(conn)
            .insert(forward_destinations)
            .on_conflict_do_nothing(index_elements=[forward_destinations.c.name])
        )
        conn.execute(statement.values(name=name, position=position, created_at=utc_now_iso(), policy=document))
        # Another forwarder may have registered it first: its position counts.
        position = _position_of(conn, name)
    conn.execute(update(forward_destinations).where(forward_destinations.c.name == name).values(policy=document))
    return position


def destination_policy(conn: Connection, name: str) -> dict | None:
    """The match and order a forwarder last served the destination with; raises UnknownDestination."""
    row = conn.execute(select(forward_destinations.c.policy).where(forward_destinations.c.name == name)).first()
    if row is None:
        raise UnknownDestination(name)
    return None if row.policy is None else json.loads(row.policy)


def _position_of(conn: Connection, name: str, lock: bool = False) -> int | None:
    query = select(forward_destinations.c.position).where(forward_destinations.c.name == name)
    return conn.execute(query.with_for_update() if lock else query).scalar_one_or_none()


def destination_position(conn: Connection, name: str) -> int:
    """The destination's position; raises UnknownDestination."""
    position = _position_of(conn, name)
    if position is None:
        raise UnknownDestination(name)
    return position


@dataclass(frozen=True)
class Taken:
    """What claim_new took: the deliveries leased to be tried now, the destination's position
    after the batch, how many messages its match skipped, and how many wait for an earlier
    message of their key."""

    claimed: list[Claimed]
    position: int
    skipped: int = 0
    waiting: int = 0


def claim_new(
    conn: Connection,
    name: str,
    owner: str,
    lease_until: float,
    now: float,
    limit: int,
    policy: DeliveryPolicy = EVERY_MESSAGE,
) -> Taken:
    """Take up to `limit` messages after the destination's position and move the position past
    them: those the policy keeps are owed (leased to `owner` unless an earlier message of their
    key is still owed: those wait, unleased), the rest are skipped. Run in a write transaction."""
    position = _position_of(conn, name, lock=True)
    found = messages_after(conn, position, limit)
    if not found:
        return Taken([], position)
    kept = [(position, message, policy.key(message)) for position, message in found if policy.keeps(message)]
    # A key with a row still pending (in the database, or earlier in this batch) waits for it.
    busy = _keys_pending(conn, name, {key for _position, _message, key in kept if key is not None})
    rows, claimed = [], []
    for position, message, key in kept:
        leased = key is None or key not in busy
        if key is not None:
            busy.add(key)
        rows.append(
            {
                "destination": name,
                "position": position,
                "state": PENDING,
                "attempts": 0,
                "queued_at": now,
                "next_attempt_at": now,
                "lease_owner": owner if leased else None,
                "lease_until": lease_until if leased else None,
                "order_key": key,
            }
        )
        if leased:
            claimed.append(Claimed(position, 0, now, message))
    if rows:
        conn.execute(insert(forward_deliveries), rows)
    position = found[-1][0]
    conn.execute(update(forward_destinations).where(forward_destinations.c.name == name).values(position=position))
    return Taken(claimed, position, skipped=len(found) - len(kept), waiting=len(rows) - len(claimed))


def _keys_pending(conn: Connection, name: str, keys: set[str]) -> set[str]:
    if not keys:
        return set()
    # Keys are made of E.164 numbers: stored as they are, as the numbers themselves are.
    found: set[str] = set()
    ordered = sorted(keys)
    for start in range(0, len(ordered), REPLAY_CHUNK):
        chunk = ordered[start : start + REPLAY_CHUNK]
        found.update(
            conn.execute(
                select(forward_deliveries.c.order_key)
                .where(
                    forward_deliveries.c.destination == name,
                    forward_deliveries.c.state == PENDING,
                    forward_deliveries.c.order_key.in_(chunk),
                )
                .distinct()
            ).scalars()
        )
    return found


def has_due(conn: Connection, name: str, owner: str, now: float, sole_forwarder: bool = False) -> bool:
    """Whether a pending delivery is due and free for `owner` to take."""
    due = _due(name, owner, now, sole_forwarder)
    return conn.execute(select(forward_deliveries.c.position).where(*due).limit(1)).first() is not None


_earlier = forward_deliveries.alias("earlier")


def _due(name: str, owner: str, now: float, sole_forwarder: bool) -> list:
    free = [forward_deliveries.c.lease_until.is_(None), forward_deliveries.c.lease_until < now]
    if sole_forwarder:
        # No other forwarder is alive: what another one holds, it held when it was killed.
        free.append(forward_deliveries.c.lease_owner != owner)
    # With an order, only the first pending row of its key (leased or not) may be tried.
    head_of_its_key = or_(
        forward_deliveries.c.order_key.is_(None),
        not_(
            exists().where(
                and_(
                    _earlier.c.destination == forward_deliveries.c.destination,
                    _earlier.c.order_key == forward_deliveries.c.order_key,
                    _earlier.c.state == PENDING,
                    _earlier.c.position < forward_deliveries.c.position,
                )
            )
        ),
    )
    return [
        forward_deliveries.c.destination == name,
        forward_deliveries.c.state == PENDING,
        forward_deliveries.c.next_attempt_at <= now,
        or_(*free),
        head_of_its_key,
    ]


def claim_due(
    conn: Connection, name: str, owner: str, lease_until: float, now: float, limit: int, sole_forwarder: bool = False
) -> list[Claimed]:
    """Lease up to `limit` due deliveries to `owner`, oldest due first; rows another forwarder
    holds are skipped (unless `sole_forwarder`: then only this one's own are). Run in a
    write transaction."""
    due = (
        select(forward_deliveries.c.position)
        .where(*_due(name, owner, now, sole_forwarder))
        .order_by(forward_deliveries.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    leased = conn.execute(
        update(forward_deliveries)
        .where(forward_deliveries.c.destination == name, forward_deliveries.c.position.in_(due.scalar_subquery()))
        .values(lease_owner=owner, lease_until=lease_until)
        .returning(forward_deliveries.c.position, forward_deliveries.c.attempts, forward_deliveries.c.queued_at)
    ).all()
    found = _messages_at(conn, [row.position for row in leased])
    return sorted(
        (Claimed(row.position, row.attempts, row.queued_at, found.get(row.position)) for row in leased),
        key=lambda claimed: claimed.position,
    )


def _messages_at(conn: Connection, positions: list[int]) -> dict[int, StoredMessage]:
    if not positions:
        return {}
    dialect = dialect_of(conn)
    rows = conn.execute(select(messages.c.id, *PAGE_COLUMNS).where(messages.c.id.in_(positions))).all()
    return {row.id: stored_message(dialect, row) for row in rows}


def renew_leases(conn: Connection, name: str, owner: str, positions: list[int], lease_until: float) -> None:
    """Keep holding these deliveries (still queued or in flight here)."""
    conn.execute(_owned(name, owner, positions).values(lease_until=lease_until))


def release_leases(conn: Connection, name: str, owner: str, positions: list[int]) -> None:
    """Give back deliveries taken but not tried: any forwarder may take them at once."""
    conn.execute(_owned(name, owner, positions).values(lease_owner=None, lease_until=None))


def _owned(name: str, owner: str, positions: list[int]):
    return update(forward_deliveries).where(
        forward_deliveries.c.destination == name,
        forward_deliveries.c.position.in_(positions),
        forward_deliveries.c.lease_owner == owner,
    )


def record_outcomes(conn: Connection, name: str, outcomes: list[Outcome]) -> None:
    """Delivered rows go; the others wait for their next attempt, or are dead letters."""
    delivered = [outcome.position for outcome in outcomes if outcome.delivered]
    if delivered:
        conn.execute(
            delete(forward_deliveries).where(
                forward_deliveries.c.destination == name, forward_deliveries.c.position.in_(delivered)
            )
        )
    failed = [outcome for outcome in outcomes if not outcome.delivered]
    for outcome in failed:
        conn.execute(
            update(forward_deliveries)
            .where(forward_deliveries.c.destination == name, forward_deliveries.c.position == outcome.position)
            .values(
                state=DEAD if outcome.dead else PENDING,
                attempts=outcome.attempts,
                next_attempt_at=outcome.next_attempt_at,
                lease_owner=None,
                lease_until=None,
                last_status=outcome.status,
                last_error=outcome.error,
                last_attempt_at=outcome.finished_at,
            )
        )


def count_dead(conn: Connection, name: str) -> int:
    """The destination's dead letters now."""
    return conn.execute(
        select(func.count())
        .select_from(forward_deliveries)
        .where(forward_deliveries.c.destination == name, forward_deliveries.c.state == DEAD)
    ).scalar_one()


def oldest_undelivered_at(conn: Connection, name: str) -> str | None:
    """When the oldest message the destination has not had (dead letters aside) was stored."""
    position = destination_position(conn, name)
    oldest_pending = (
        select(func.min(forward_deliveries.c.position))
        .where(forward_deliveries.c.destination == name, forward_deliveries.c.state == PENDING)
        .scalar_subquery()
    )
    first_after = select(func.min(messages.c.id)).where(messages.c.id > position).scalar_subquery()
    candidates = conn.execute(
        select(messages.c.created_at).where(messages.c.id.in_([oldest_pending, first_after]))
    ).scalars()
    return min(candidates, default=None)


@dataclass(frozen=True)
class DestinationSummary:
    """Where one destination stands, as the console shows it."""

    name: str
    position: int
    oldest_undelivered_at: str | None
    pending: int
    dead_letters: int
    latest_dead_letters: list[DeliveryState]
    waiting: list[DeliveryState]


# The console shows this many dead letters and waiting deliveries of each destination.
SUMMARY_DELIVERIES = 20


def destination_summaries(conn: Connection) -> list[DestinationSummary]:
    """Every destination a forwarder has served on this database, by name."""
    counts = {
        (row.destination, row.state): row.n
        for row in conn.execute(
            select(forward_deliveries.c.destination, forward_deliveries.c.state, func.count().label("n")).group_by(
                forward_deliveries.c.destination, forward_deliveries.c.state
            )
        )
    }
    rows = conn.execute(
        select(forward_destinations.c.name, forward_destinations.c.position).order_by(forward_destinations.c.name)
    ).all()
    return [
        DestinationSummary(
            name=row.name,
            position=row.position,
            oldest_undelivered_at=oldest_undelivered_at(conn, row.name),
            pending=counts.get((row.name, PENDING), 0),
            dead_letters=counts.get((row.name, DEAD), 0),
            latest_dead_letters=latest_deliveries(conn, row.name, DEAD, SUMMARY_DELIVERIES),
            waiting=latest_deliveries(conn, row.name, PENDING, SUMMARY_DELIVERIES),
        )
        for row in rows
    ]


def list_deliveries(conn: Connection, name: str, dead_only: bool) -> list[DeliveryState]:
    """The deliveries still owed (or the dead letters alone), oldest message first."""
    destination_position(conn, name)
    query = _deliveries_of(name).order_by(forward_deliveries.c.position)
    if dead_only:
        query = query.where(forward_deliveries.c.state == DEAD)
    return _delivery_states(conn, query)


def latest_deliveries(conn: Connection, name: str, state: str, limit: int) -> list[DeliveryState]:
    """At most `limit` deliveries in `state`: the dead letters that died last, or the pending
    ones due soonest (a dead letter's next_attempt_at is when it died: one index serves both)."""
    column = forward_deliveries.c.next_attempt_at
    query = (
        _deliveries_of(name)
        .where(forward_deliveries.c.state == state)
        .order_by(column.desc() if state == DEAD else column, forward_deliveries.c.position)
        .limit(limit)
    )
    return _delivery_states(conn, query)


def _deliveries_of(name: str):
    return (
        select(forward_deliveries, messages.c.message_id)
        .select_from(forward_deliveries.outerjoin(messages, messages.c.id == forward_deliveries.c.position))
        .where(forward_deliveries.c.destination == name)
    )


def _delivery_states(conn: Connection, query) -> list[DeliveryState]:
    dialect = dialect_of(conn)
    return [
        DeliveryState(
            message_id=None if row.message_id is None else dialect.from_column(row.message_id),
            position=row.position,
            state=row.state,
            attempts=row.attempts,
            last_status=row.last_status,
            last_error=row.last_error,
            last_attempt_at=None if row.last_attempt_at is None else iso_from_epoch(row.last_attempt_at),
            next_attempt_at=None if row.state == DEAD else iso_from_epoch(row.next_attempt_at),
        )
        for row in conn.execute(query)
    ]


@dataclass(frozen=True)
class ReplaySelection:
    """Which messages to send again: the dead letters, one message, or a range of ts."""

    failed: bool = False
    message_id: str | None = None
    since: str | None = None
    before: str | None = None


def replay(
    conn: Connection,
    name: str,
    selection: ReplaySelection,
    now: float,
    dry_run: bool,
    policy: DeliveryPolicy = EVERY_MESSAGE,
) -> int:
    """Queue the selected messages that the policy keeps (only those the destination has been
    given or owed: the feed after its position brings the rest anyway) to be sent again now,
    dead letters included, each in its key's order among what is owed; returns how many. Run
    in a write transaction."""
    position = destination_position(conn, name)
    reset = {"state": PENDING, "attempts": 0, "queued_at": now, "next_attempt_at": now}
    if selection.failed:
        dead = [forward_deliveries.c.destination == name, forward_deliveries.c.state == DEAD]
        if dry_run:
            return conn.execute(select(func.count()).select_from(forward_deliveries).where(*dead)).scalar_one()
        return conn.execute(update(forward_deliveries).where(*dead).values(**reset)).rowcount
    dialect = dialect_of(conn)
    chosen = [messages.c.id <= position]
    if selection.message_id is not None:
        chosen.append(messages.c.message_id == dialect.to_column(selection.message_id))
    if selection.since is not None:
        chosen.append(messages.c.ts_instant >= instant_key(selection.since))
    if selection.before is not None:
        chosen.append(messages.c.ts_instant < instant_key(selection.before))
    queued = 0
    for chunk in _chosen_messages(conn, chosen):
        rows = [
            {"destination": name, "position": found_at, **reset, "order_key": policy.key(message)}
            for found_at, message in chunk
            if policy.keeps(message)
        ]
        queued += len(rows)
        if rows and not dry_run:
            statement = dialect.insert(forward_deliveries).values(rows)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[forward_deliveries.c.destination, forward_deliveries.c.position],
                    set_={**reset, "order_key": statement.excluded.order_key},
                )
            )
    return queued


def _chosen_messages(conn: Connection, chosen: list) -> Iterator[list[tuple[int, StoredMessage]]]:
    """The messages meeting `chosen`, in feed order, REPLAY_CHUNK at a time."""
    dialect = dialect_of(conn)
    after = BEGINNING
    while True:
        rows = conn.execute(
            select(messages.c.id, *PAGE_COLUMNS)
            .where(*chosen, messages.c.id > after)
            .order_by(messages.c.id)
            .limit(REPLAY_CHUNK)
        ).all()
        if not rows:
            return
        yield [(row.id, stored_message(dialect, row)) for row in rows]
        after = rows[-1].id
