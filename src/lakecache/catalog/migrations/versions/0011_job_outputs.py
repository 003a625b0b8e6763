"""Job outputs and time limits (the compute work that finishes jobs).

* ``compute_job_outputs``: the files a job's outputs folder held when its attempt
  ended, each a blob in the lake (content-addressed, as a commit's files);
* ``compute_jobs``: a time limit per job, and the manifest, count and bytes of its
  collected outputs;
* ``compute_queues``: a default time limit for its jobs, and what they do when a
  site's agent is down (wait, or move on);
* ``compute_runners``: when each site agent's job runner last ran a pass.

Revision ID: 0011
Revises: 0010

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("compute_jobs") as batch:
        batch.add_column(sa.Column("timeout_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("outputs_manifest", sa.String(64), nullable=True))
        batch.add_column(sa.Column("outputs_files", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("outputs_bytes", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("compute_queues") as batch:
        batch.add_column(sa.Column("job_timeout_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("agent_down", sa.String(16), nullable=True))
    op.create_table(
        "compute_job_outputs",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id",
            _BIG_ID,
            sa.ForeignKey("compute_jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
    )
    op.create_index("ix_compute_job_outputs_job_id", "compute_job_outputs", ["job_id"])
    op.create_table(
        "compute_runners",
        sa.Column("worker", sa.String(255), primary_key=True),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("seen_at", _TS, nullable=False),
    )
    op.create_index("ix_compute_runners_site", "compute_runners", ["site"])


def downgrade() -> None:
    op.drop_table("compute_runners")
    op.drop_table("compute_job_outputs")
    with op.batch_alter_table("compute_queues") as batch:
        batch.drop_column("agent_down")
        batch.drop_column("job_timeout_seconds")
    with op.batch_alter_table("compute_jobs") as batch:
        batch.drop_column("outputs_bytes")
        batch.drop_column("outputs_files")
        batch.drop_column("outputs_manifest")
        batch.drop_column("timeout_seconds")
