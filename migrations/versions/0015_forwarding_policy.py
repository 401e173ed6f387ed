"""Forwarding, round two: a destination's match and order are kept beside its position, and
each owed delivery carries its ordering key.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

OrderedText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.add_column(
        "forward_destinations",
        sa.Column(
            "policy",
            sa.Text,
            nullable=True,
            comment="JSON: the match and order the forwarder last served it with (replay chooses by them).",
        ),
    )
    op.add_column(
        "forward_deliveries",
        sa.Column(
            "order_key",
            OrderedText,
            nullable=True,
            comment="With an order: the sender (or sender and recipient); tried after every earlier pending row of it.",
        ),
    )
    op.create_index("ix_forward_deliveries_order", "forward_deliveries", ["destination", "order_key", "position"])


def downgrade() -> None:
    op.drop_index("ix_forward_deliveries_order", table_name="forward_deliveries")
    with op.batch_alter_table("forward_deliveries") as batch:
        batch.drop_column("order_key")
    with op.batch_alter_table("forward_destinations") as batch:
        batch.drop_column("policy")
