"""Compute: capacity of each compute resource, templates, queues, jobs, attempts, timelines.

Revision ID: 0009
Revises: 0007 (temporarily: 0008 lands in parallel, then this points at 0008)

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def _size_columns(prefix: str = "") -> list[sa.Column[object]]:
    return [
        sa.Column(f"{prefix}cpu_milli", sa.BigInteger(), nullable=False),
        sa.Column(f"{prefix}memory", sa.BigInteger(), nullable=False),
        sa.Column(f"{prefix}gpu", sa.Integer(), nullable=False),
        sa.Column(f"{prefix}resources", sa.Text(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "compute_capacity",
        sa.Column("compute_id", _BIG_ID, nullable=False),
        *_size_columns(),
        sa.Column("admissions", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("compute_id", name="pk_compute_capacity"),
        sa.ForeignKeyConstraint(
            ["compute_id"],
            ["compute_resources.id"],
            name="fk_compute_capacity_compute_id_compute_resources",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "compute_templates",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("compute_id", _BIG_ID, nullable=False),
        *_size_columns(),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_compute_templates"),
        sa.UniqueConstraint("name", name="uq_compute_templates_name"),
        sa.ForeignKeyConstraint(
            ["compute_id"],
            ["compute_resources.id"],
            name="fk_compute_templates_compute_id_compute_resources",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_compute_templates_compute_id", "compute_templates", ["compute_id"])
    op.create_table(
        "compute_queues",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("policy", sa.String(16), nullable=False),
        sa.Column("pending_deadline_seconds", sa.Integer(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_compute_queues"),
        sa.UniqueConstraint("name", name="uq_compute_queues_name"),
        sa.CheckConstraint("policy IN ('order', 'data')", name="ck_compute_queues_policy"),
    )
    op.create_table(
        "compute_queue_templates",
        sa.Column("queue_id", _BIG_ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("template_id", _BIG_ID, nullable=False),
        sa.PrimaryKeyConstraint("queue_id", "position", name="pk_compute_queue_templates"),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["compute_queues.id"],
            name="fk_compute_queue_templates_queue_id_compute_queues",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["compute_templates.id"],
            name="fk_compute_queue_templates_template_id_compute_templates",
        ),
    )
    op.create_index(
        "ix_compute_queue_templates_template_id", "compute_queue_templates", ["template_id"]
    )
    op.create_table(
        "compute_jobs",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("queue_id", _BIG_ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("env", sa.Text(), nullable=False),
        sa.Column("inputs", sa.Text(), nullable=False),
        sa.Column("image", sa.Text(), nullable=True),
        *_size_columns(),
        sa.Column("submitted_by", sa.String(255), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("deadline_at", _TS, nullable=True),
        sa.Column("template_id", _BIG_ID, nullable=True),
        sa.Column("compute_id", _BIG_ID, nullable=True),
        *_size_columns("slot_"),
        sa.Column("placement", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("heartbeat_at", _TS, nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("workdir", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_compute_jobs"),
        sa.CheckConstraint(
            "state IN ('queued', 'placed', 'running', 'succeeded', 'failed', 'cancelled')",
            name="ck_compute_jobs_state",
        ),
        sa.ForeignKeyConstraint(
            ["queue_id"], ["compute_queues.id"], name="fk_compute_jobs_queue_id_compute_queues"
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["compute_templates.id"],
            name="fk_compute_jobs_template_id_compute_templates",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["compute_id"],
            ["compute_resources.id"],
            name="fk_compute_jobs_compute_id_compute_resources",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_compute_jobs_state", "compute_jobs", ["state"])
    op.create_index("ix_compute_jobs_compute_id_state", "compute_jobs", ["compute_id", "state"])
    op.create_table(
        "compute_job_events",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", _BIG_ID, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_compute_job_events"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["compute_jobs.id"],
            name="fk_compute_job_events_job_id_compute_jobs",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_compute_job_events_job_id", "compute_job_events", ["job_id"])
    op.create_table(
        "compute_job_attempts",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", _BIG_ID, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(255), nullable=False),
        sa.Column("compute_id", _BIG_ID, nullable=True),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_compute_job_attempts"),
        sa.UniqueConstraint("job_id", "number", name="uq_compute_job_attempts_job_id_number"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["compute_jobs.id"],
            name="fk_compute_job_attempts_job_id_compute_jobs",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["compute_id"],
            ["compute_resources.id"],
            name="fk_compute_job_attempts_compute_id_compute_resources",
            ondelete="SET NULL",
        ),
    )


def downgrade() -> None:
    for table in (
        "compute_job_attempts",
        "compute_job_events",
        "compute_jobs",
        "compute_queue_templates",
        "compute_queues",
        "compute_templates",
        "compute_capacity",
    ):
        op.drop_table(table)
