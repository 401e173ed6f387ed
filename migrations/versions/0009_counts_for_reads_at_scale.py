"""Counts for reads at scale: texts per folded gram of one to three characters, messages per day of ts.

text_grams is filled from the stored folded texts, a batch of rows at a time (about 12 s
per million messages here), instant_day_counts by one GROUP BY; from then on both are kept
in the transaction of every insert and purge.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections import Counter

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ORDERED_TEXT = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
BATCH_ROWS = 50_000
# As storage/grams.py counts them at this revision.
GRAM_LENGTHS = (1, 2, 3)


def upgrade() -> None:
    grams = op.create_table(
        "text_grams",
        sa.Column("gram", ORDERED_TEXT, primary_key=True),
        sa.Column("texts", sa.BigInteger(), nullable=False),
    )
    bind = op.get_bind()
    read = sa.text("SELECT id, text_folded FROM messages WHERE id > :after ORDER BY id LIMIT :rows")
    counts: Counter[str] = Counter()
    after = -1
    while True:
        rows = bind.execute(read, {"after": after, "rows": BATCH_ROWS}).all()
        if not rows:
            break
        for row in rows:
            if row.text_folded:
                counts.update(_grams_of(row.text_folded))
        after = rows[-1].id
    if counts:
        op.bulk_insert(grams, [{"gram": gram, "texts": texts} for gram, texts in sorted(counts.items())])
    op.create_table(
        "instant_day_counts",
        sa.Column("day", ORDERED_TEXT, primary_key=True),
        sa.Column("message_count", sa.BigInteger(), nullable=False),
    )
    op.execute(
        "INSERT INTO instant_day_counts (day, message_count) "
        "SELECT substr(ts_instant, 1, 10), count(*) FROM messages GROUP BY substr(ts_instant, 1, 10)"
    )


def _grams_of(folded: str) -> set[str]:
    return {folded[start : start + length] for length in GRAM_LENGTHS for start in range(len(folded) - length + 1)}


def downgrade() -> None:
    op.drop_table("instant_day_counts")
    op.drop_table("text_grams")
