"""Retention: messages found by when they were stored; one row per maintenance task.

Retention removes the messages stored (created_at) longest ago, so created_at gets an
index; maintenance_runs tells the processes of every host which one runs it now and how it
last ended.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

OrderedText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_index("ix_messages_created_at", "messages", ["created_at"])
    op.create_table(
        "maintenance_runs",
        sa.Column("task", OrderedText, primary_key=True, comment="What runs: retention."),
        sa.Column("owner", sa.Text, nullable=True, comment="The process running it now (host:pid:random), if any."),
        sa.Column("lease_until", sa.Float, nullable=True, comment="Until when that owner holds it, epoch seconds."),
        sa.Column("last_started_at", sa.Float, nullable=True, comment="When the last run started, epoch seconds."),
        sa.Column("last_completed_at", sa.Float, nullable=True, comment="When a run last completed, epoch seconds."),
        sa.Column("last_outcome", sa.Text, nullable=True, comment="completed, or failed: the reason in one line."),
        sa.Column("last_removed", sa.BigInteger, nullable=True, comment="Messages the last run removed."),
    )


def downgrade() -> None:
    op.drop_table("maintenance_runs")
    op.drop_index("ix_messages_created_at", table_name="messages")
