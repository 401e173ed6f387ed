"""Feed positions: messages.id becomes each message's place in commit order.

New ids are handed out from `message_totals.last_position` inside the write transaction
(see the dialects' reserve_positions), never from the database's own counters: SQLite
gives max(rowid) + 1, reused after the newest rows are purged, and a PostgreSQL sequence
value is taken at insert, not at commit. Existing rows keep their ids, which are already
in ingestion order, and the high-water mark starts at the largest.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message_totals") as batch:
        batch.add_column(sa.Column("last_position", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute("UPDATE message_totals SET last_position = (SELECT coalesce(max(id), 0) FROM messages)")
    with op.batch_alter_table("message_totals") as batch:
        batch.alter_column("last_position", server_default=None, existing_type=sa.BigInteger(), existing_nullable=False)
    if op.get_bind().dialect.name == "postgresql":
        # An insert that names no position must fail, not take one from the old sequence.
        op.execute("ALTER TABLE messages ALTER COLUMN id DROP DEFAULT")
        op.execute("DROP SEQUENCE IF EXISTS messages_id_seq")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE messages_id_seq OWNED BY messages.id")
        op.execute("SELECT setval('messages_id_seq', (SELECT last_position + 1 FROM message_totals), false)")
        op.execute("ALTER TABLE messages ALTER COLUMN id SET DEFAULT nextval('messages_id_seq')")
    with op.batch_alter_table("message_totals") as batch:
        batch.drop_column("last_position")
