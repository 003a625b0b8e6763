"""Volume space as the site reports it: free and total bytes of each volume's filesystem.

The server sees a volume's filesystem only where it mounts it; an agent at the
site reports what it sees, so capacity bars and /metrics show every site.

Revision ID: 0004
Revises: 0003

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.add_column(sa.Column("fs_free", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("fs_total", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("fs_reported_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("volumes") as batch:
        batch.drop_column("fs_reported_at")
        batch.drop_column("fs_total")
        batch.drop_column("fs_free")
