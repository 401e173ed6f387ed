"""PostgreSQL: a sender's texts in the sender's order, so that counting them reads no table row.

SQLite's sender index holds each folded text (0010); a PostgreSQL B-tree entry holds at
most 2,704 bytes, so here two partial indexes share the work: one over the texts of up to
2,000 bytes, which it holds, the other over the longer ones (rare), which it points to.
Counting a sender's messages under `since` that hold a needle then reads only index pages
(13 ms -> 2.5 ms for 6,000 messages of 1,000,000). About 3 s per million messages here.

An index answers alone only for table pages the visibility map marks all-visible, which
vacuum does: autovacuum visits an insert-only table after 20% new rows by default, here
after 2%, so that the newest messages (the ones `since` asks for) are not left out long.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# As storage/tables.py names and bounds them.
HELD_TEXT_INDEX = "ix_messages_from_ts_held_text"
LONG_TEXT_INDEX = "ix_messages_from_ts_long_text"
HELD_TEXT_MAX_BYTES = 2000
INSERTED_SHARE_BEFORE_VACUUM = 0.02


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"CREATE INDEX {HELD_TEXT_INDEX} ON messages (from_msisdn, ts_instant) INCLUDE (text_folded) "
        f"WHERE octet_length(text_folded) <= {HELD_TEXT_MAX_BYTES:d}"
    )
    op.execute(
        f"CREATE INDEX {LONG_TEXT_INDEX} ON messages (from_msisdn, ts_instant) "
        f"WHERE octet_length(text_folded) > {HELD_TEXT_MAX_BYTES:d}"
    )
    op.execute(f"ALTER TABLE messages SET (autovacuum_vacuum_insert_scale_factor = {INSERTED_SHARE_BEFORE_VACUUM})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE messages RESET (autovacuum_vacuum_insert_scale_factor)")
    op.drop_index(LONG_TEXT_INDEX, table_name="messages")
    op.drop_index(HELD_TEXT_INDEX, table_name="messages")
