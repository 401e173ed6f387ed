"""Messages per hour and per day of created_at, kept with the writes, for GET /stats/timeline.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ORDERED_TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

# created_at is YYYY-MM-DDTHH:MM:SS.ffffffZ: its first 13 characters name the hour, 10 the day.
FILL = """
INSERT INTO timeline_counts (bucket, start, message_count)
SELECT 'hour', substr(created_at, 1, 13) || ':00:00Z', count(*) FROM messages GROUP BY substr(created_at, 1, 13)
UNION ALL
SELECT 'day', substr(created_at, 1, 10) || 'T00:00:00Z', count(*) FROM messages GROUP BY substr(created_at, 1, 10)
"""


def upgrade() -> None:
    op.create_table(
        "timeline_counts",
        sa.Column("bucket", ORDERED_TEXT, primary_key=True),
        sa.Column("start", ORDERED_TEXT, primary_key=True),
        sa.Column("message_count", sa.BigInteger(), nullable=False),
    )
    op.execute(FILL)


def downgrade() -> None:
    op.drop_table("timeline_counts")
