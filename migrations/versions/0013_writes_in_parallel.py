"""Writes in parallel: count changes appended and folded in later; feed positions by transaction.

count_changes holds, on PostgreSQL, one row per write transaction of what it changes in the
kept counts (storage/read_model/); SQLite changes its counts in place and leaves it empty.
PostgreSQL's new feed positions start at the storing transaction's id times 65,536
(dialects/postgresql.py): above every position handed out so far, which this checks.

Downgrade folds what is not folded yet, and moves the totals row's last_position past the
newest position, so that positions taken in commit order again come after every one stored.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

POSITIONS_PER_TRANSACTION = 1 << 16


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "count_changes",
        sa.Column(
            "changes",
            sa.JSON().with_variant(JSONB, "postgresql"),
            nullable=False,
            comment='One write\'s changes: {counter: {key: n}}, counters as in storage/read_model/, e.g. {"message_totals": {"total_messages": 3}}.',
        ),
    )
    if bind.dialect.name != "postgresql":
        return
    # Rows come and go every second: vacuum after a few thousand dead ones, not 20% of the table.
    op.execute(
        "ALTER TABLE count_changes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000, "
        "autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 2000)"
    )
    transaction = bind.execute(sa.text("SELECT pg_current_xact_id()::text::bigint")).scalar_one()
    handed_out = bind.execute(sa.text("SELECT last_position FROM message_totals WHERE id = 1")).scalar_one()
    if transaction * POSITIONS_PER_TRANSACTION <= handed_out:
        raise RuntimeError(
            f"feed positions up to {handed_out} were handed out, more than {POSITIONS_PER_TRANSACTION} "
            "per transaction so far: this database cannot take transaction-ordered positions"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        from webhook_service.storage.read_model import fold

        while bind.execute(sa.text("SELECT EXISTS (SELECT FROM count_changes)")).scalar_one():
            fold(bind)
        op.execute(
            "UPDATE message_totals SET last_position = "
            "greatest(last_position, (SELECT coalesce(max(id), 0) FROM messages)) WHERE id = 1"
        )
    op.drop_table("count_changes")
