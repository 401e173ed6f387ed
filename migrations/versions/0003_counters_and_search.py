"""Counters kept with the writes, the text index's vocabulary, NUL folded to U+2400.

Counters per sender and overall make /stats and unfiltered totals cheap; the vocabulary
says how common each trigram is; the trigram tokenizer stopped at a NUL, hiding the text
after it from search.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FOLDED_NUL = "\u2400"


def upgrade() -> None:
    op.create_table(
        "sender_counts",
        sa.Column("from_msisdn", sa.Text(), primary_key=True),
        sa.Column("message_count", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_sender_counts_top", "sender_counts", ["message_count", "from_msisdn"])
    op.create_table(
        "message_totals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("total_messages", sa.BigInteger(), nullable=False),
        sa.Column("senders_count", sa.BigInteger(), nullable=False),
    )
    op.execute(
        "INSERT INTO sender_counts (from_msisdn, message_count) "
        "SELECT from_msisdn, count(*) FROM messages GROUP BY from_msisdn"
    )
    op.execute(
        "INSERT INTO message_totals (id, total_messages, senders_count) "
        "SELECT 1, (SELECT count(*) FROM messages), (SELECT count(*) FROM sender_counts)"
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE messages_text_fts_vocabulary USING fts5vocab(messages_text_fts, 'row')")
        # The trigram tokenizer stops at a NUL: re-index the few texts that hold one.
        op.execute(
            "INSERT INTO messages_text_fts (messages_text_fts, rowid, text_folded) "
            "SELECT 'delete', id, text_folded FROM messages WHERE instr(text_folded, char(0)) > 0"
        )
        op.execute(
            f"UPDATE messages SET text_folded = replace(text_folded, char(0), '{FOLDED_NUL}') "
            "WHERE instr(text_folded, char(0)) > 0"
        )
        op.execute(
            "INSERT INTO messages_text_fts (rowid, text_folded) "
            "SELECT id, text_folded FROM messages WHERE instr(text, char(0)) > 0"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS messages_text_fts_vocabulary")
    op.drop_table("message_totals")
    op.drop_index("ix_sender_counts_top", table_name="sender_counts")
    op.drop_table("sender_counts")
