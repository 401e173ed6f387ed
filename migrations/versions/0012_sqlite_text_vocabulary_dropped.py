"""SQLite: the text index's vocabulary table is dropped.

It said in how many texts each trigram occurs; the gram counts (0009) say it for every
substring of one to three characters and are what search reads now.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS messages_text_fts_vocabulary")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE messages_text_fts_vocabulary USING fts5vocab(messages_text_fts, 'row')")
