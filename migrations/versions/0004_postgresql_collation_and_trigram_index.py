"""PostgreSQL: byte-order collation for ordered and compared columns, a trigram index for q.

Messages order by (instant, message_id) and senders tie by `from`, compared code point by
code point as SQLite does; a database's default collation (en_US, ICU) would order
`B1` after `a1`. The `pg_trgm` GIN index over the folded text serves `q` (LIKE with
escaping); the extension is trusted since PostgreSQL 13, so the database's owner may
create it. Nothing changes on SQLite, whose FTS5 index does that work.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from webhook_service.storage.migrations import SchemaMismatch
from webhook_service.storage.tables import TEXT_TRIGRAM_INDEX_NAME

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BYTE_ORDER_COLUMNS = [
    ("messages", "message_id"),
    ("messages", "from_msisdn"),
    ("messages", "to_msisdn"),
    ("messages", "ts_instant"),
    ("sender_counts", "from_msisdn"),
]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, column in BYTE_ORDER_COLUMNS:
        op.alter_column(table, column, type_=sa.Text(collation="C"), existing_type=sa.Text(), existing_nullable=False)
    _create_trigram_extension(bind)
    op.create_index(
        TEXT_TRIGRAM_INDEX_NAME,
        "messages",
        ["text_folded"],
        postgresql_using="gin",
        postgresql_ops={"text_folded": "gin_trgm_ops"},
    )


def _create_trigram_extension(bind) -> None:
    installed = bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).first()
    if installed:
        return
    available = bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first()
    may_create = bind.execute(
        sa.text("SELECT has_database_privilege(current_user, current_database(), 'CREATE')")
    ).scalar()
    database = bind.execute(sa.text("SELECT current_database()")).scalar()
    if not available:
        raise SchemaMismatch(
            "the PostgreSQL server lacks the pg_trgm extension that text search needs: install the server's "
            "contrib package (postgresql-contrib), then start again"
        )
    if not may_create:
        raise SchemaMismatch(
            f"the extension pg_trgm is missing in database {database} and this role may not create it: run "
            f"'CREATE EXTENSION pg_trgm;' in {database} as its owner or a superuser, then start again"
        )
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(TEXT_TRIGRAM_INDEX_NAME, table_name="messages")
    for table, column in BYTE_ORDER_COLUMNS:
        op.alter_column(table, column, type_=sa.Text(), existing_type=sa.Text(collation="C"), existing_nullable=False)
