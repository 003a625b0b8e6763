"""Timeline entries a job runner may send again: a key the runner makes per entry.

* ``compute_job_events.key``: the runner's own name for one entry (random hex), so
  that the same entry sent twice (its connection broke after the server wrote it,
  as when a server replica dies mid-request) is written once. NULL for entries
  written without one (the server's own, direct-mode runners, older agents).

Only a nullable column and an index: a server of the previous release keeps
writing entries (without a key) while and after this runs.

Revision ID: 0014
Revises: 0013

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision: str | None = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("compute_job_events") as batch:
        batch.add_column(sa.Column("key", sa.String(64), nullable=True))
    op.create_index(
        "ix_compute_job_events_job_id_key", "compute_job_events", ["job_id", "key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ix_compute_job_events_job_id_key", table_name="compute_job_events")
    with op.batch_alter_table("compute_job_events") as batch:
        batch.drop_column("key")
