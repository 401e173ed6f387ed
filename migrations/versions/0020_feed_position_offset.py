"""PostgreSQL: feed positions carry an offset, raised when a database moves to another cluster.

A feed position on PostgreSQL is the storing transaction's id times 65,536 plus its place
(0014). Transaction ids are the cluster's own: a database restored with pg_restore into a
newer cluster (or copied by logical replication) holds positions from transaction ids the
new cluster has not reached, and what it stored next took lower positions than the restored
messages: readers resuming past them skipped it, and the restored ones stayed behind the
horizon. `transaction_offset` is added to every transaction id a position is made from;
each start (webhook-service migrate) raises it past the newest stored position when needed.
Unused on SQLite, whose positions are counted in message_totals.last_position.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message_totals") as batch:
        batch.add_column(
            sa.Column(
                "transaction_offset",
                sa.BigInteger(),
                nullable=False,
                server_default="0",
                comment="PostgreSQL: added to the transaction id of every feed position; raised at a start "
                "when the stored positions are ahead of the cluster's transaction ids (a restore).",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("message_totals") as batch:
        batch.drop_column("transaction_offset")
