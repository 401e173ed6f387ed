"""Exact totals of long needles that many texts hold, remembered for a while (PostgreSQL).

The trigram index holds no positions: the total of `your otp is ` (125,621 of 1,000,000
texts) is counted by testing every text that may hold it, 117 ms, at every page of it. Its
total below a feed position is remembered (text_totals) and a later read adds only the newer
messages; a delete of messages ends every total counted before it (message_totals.deletions).
The table exists on both databases, empty on SQLite (whose index counts such needles).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

ORDERED_TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "text_totals",
        sa.Column("needle", ORDERED_TEXT, primary_key=True, comment="The folded needle, as stored texts hold it."),
        sa.Column("total", sa.BigInteger(), nullable=False, comment="Messages below counted_below holding it."),
        sa.Column(
            "counted_below", sa.BigInteger(), nullable=False, comment="The feed position its total stops before."
        ),
        sa.Column(
            "deletions", sa.BigInteger(), nullable=False, comment="message_totals.deletions when it was counted."
        ),
        sa.Column(
            "counted_at", sa.Float(), nullable=False, comment="When it was counted, in Unix seconds of the database."
        ),
    )
    with op.batch_alter_table("message_totals") as batch:
        batch.add_column(
            sa.Column(
                "deletions",
                sa.BigInteger(),
                nullable=False,
                server_default="0",
                comment="Transactions that deleted messages so far: a text total remembered before the latest is "
                "not used.",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("message_totals") as batch:
        batch.drop_column("deletions")
    op.drop_table("text_totals")
