"""Create the write_probe table that readiness rewrites to prove the database takes writes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "write_probe",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("written_at", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("write_probe")
