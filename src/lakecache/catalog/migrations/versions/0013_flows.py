"""Flows: flow runs and their tasks, each with the job it ran as.

Revision ID: 0013
Revises: 0012

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision: str | None = "0012"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "flow_runs",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("code_version", sa.Text(), nullable=False),
        sa.Column("submitted_by", sa.String(255), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("owner_until", _TS, nullable=True),
        sa.CheckConstraint(
            "state IN ('running', 'succeeded', 'failed', 'cancelled')", name="ck_flow_runs_state"
        ),
    )
    op.create_index("ix_flow_runs_state", "flow_runs", ["state"])
    op.create_table(
        "flow_tasks",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id", _BIG_ID, sa.ForeignKey("flow_runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column(
            "job_id", _BIG_ID, sa.ForeignKey("compute_jobs.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("jobs", sa.Text(), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("timed_out", sa.Boolean(), nullable=False),
        sa.Column("input_commits", sa.Text(), nullable=True),
        sa.Column("output_dataset", sa.String(64), nullable=True),
        sa.Column("output_commit", sa.String(64), nullable=True),
        sa.Column("output_commits", sa.Text(), nullable=True),
        sa.Column("memo_key", sa.String(64), nullable=True),
        sa.Column("reused_from", _BIG_ID, nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')",
            name="ck_flow_tasks_state",
        ),
        sa.UniqueConstraint("run_id", "name", name="uq_flow_tasks_run_id_name"),
    )
    op.create_index("ix_flow_tasks_run_id_position", "flow_tasks", ["run_id", "position"])
    op.create_index("ix_flow_tasks_memo_key", "flow_tasks", ["memo_key"])
    op.create_index("ix_flow_tasks_job_id", "flow_tasks", ["job_id"])


def downgrade() -> None:
    op.drop_table("flow_tasks")
    op.drop_table("flow_runs")
