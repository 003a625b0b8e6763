"""Fence tokens on caches: every claim of a cache row (fill, eviction) raises a counter.

Each heartbeat, publish, failure and end of eviction presents the token of
the claim it belongs to; a worker whose claim was taken over (it was paused
past the stale time) gets "taken over" and stops, so it cannot undo a newer one.

Revision ID: 0007
Revises: 0006

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("caches") as batch:
        batch.add_column(
            sa.Column("fence_token", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("caches") as batch:
        batch.drop_column("fence_token")
