"""Create the messages table, its indexes and (on SQLite) its trigram text index.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Contentless FTS5 over the folded text, kept in step by triggers. `case_sensitive 1`
# because the column is already case-folded in Python, which knows all of Unicode.
SQLITE_TEXT_INDEX = [
    ("CREATE VIRTUAL TABLE messages_text_fts USING fts5(text_folded, content='', tokenize='trigram case_sensitive 1')"),
    (
        "CREATE TRIGGER messages_text_fts_insert AFTER INSERT ON messages "
        "WHEN new.text_folded IS NOT NULL BEGIN "
        "INSERT INTO messages_text_fts(rowid, text_folded) VALUES (new.id, new.text_folded); END"
    ),
    (
        "CREATE TRIGGER messages_text_fts_delete AFTER DELETE ON messages "
        "WHEN old.text_folded IS NOT NULL BEGIN "
        "INSERT INTO messages_text_fts(messages_text_fts, rowid, text_folded) "
        "VALUES ('delete', old.id, old.text_folded); END"
    ),
]


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("from_msisdn", sa.Text(), nullable=False),
        sa.Column("to_msisdn", sa.Text(), nullable=False),
        sa.Column("ts", sa.Text(), nullable=False),
        sa.Column("ts_instant", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("text_folded", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Text(), nullable=False),
        sa.UniqueConstraint("message_id", name="uq_messages_message_id"),
    )
    op.create_index("ix_messages_ts_instant", "messages", ["ts_instant", "message_id"])
    op.create_index("ix_messages_from_ts_instant", "messages", ["from_msisdn", "ts_instant", "message_id"])
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_TEXT_INDEX:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS messages_text_fts_delete")
        op.execute("DROP TRIGGER IF EXISTS messages_text_fts_insert")
        op.execute("DROP TABLE IF EXISTS messages_text_fts")
    op.drop_index("ix_messages_from_ts_instant", table_name="messages")
    op.drop_index("ix_messages_ts_instant", table_name="messages")
    op.drop_table("messages")
