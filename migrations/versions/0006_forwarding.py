"""The forwarder's state: a feed position per destination and the deliveries not yet made.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ORDERED_TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "forward_destinations",
        sa.Column("name", ORDERED_TEXT, primary_key=True),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Text(), nullable=False),
    )
    op.create_table(
        "forward_deliveries",
        sa.Column("destination", ORDERED_TEXT, primary_key=True),
        sa.Column("position", sa.BigInteger(), primary_key=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("queued_at", sa.Float(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_attempt_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_forward_deliveries_due", "forward_deliveries", ["destination", "state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_forward_deliveries_due", table_name="forward_deliveries")
    op.drop_table("forward_deliveries")
    op.drop_table("forward_destinations")
