"""Tracking: experiments, runs, params, metrics, system metrics, tags and artifacts.

Revision ID: 0012
Revises: 0011

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["run_id"],
        ["tracking_runs.id"],
        name=f"fk_{table}_run_id_tracking_runs",
        ondelete="CASCADE",
    )


def _points(table: str) -> None:
    op.create_table(
        table,
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("first_step", sa.BigInteger(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("steps", sa.LargeBinary(), nullable=False),
        sa.Column("times", sa.LargeBinary(), nullable=False),
        sa.Column("vals", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
    )
    op.create_index(f"ix_{table}_run_id_key_first_step", table, ["run_id", "key", "first_step"])


def upgrade() -> None:
    op.create_table(
        "tracking_experiments",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tracking_experiments"),
        sa.UniqueConstraint("name", name="uq_tracking_experiments_name"),
    )
    op.create_table(
        "tracking_runs",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("experiment_id", _BIG_ID, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("user_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("env", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("job_attempt", sa.Integer(), nullable=True),
        sa.Column("flow_run", sa.String(64), nullable=True),
        sa.Column("flow_task", sa.String(255), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tracking_runs"),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["tracking_experiments.id"],
            name="fk_tracking_runs_experiment_id_tracking_experiments",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('running', 'finished', 'failed', 'killed')",
            name="ck_tracking_runs_status",
        ),
    )
    op.create_index(
        "ix_tracking_runs_experiment_id_started_at",
        "tracking_runs",
        ["experiment_id", "started_at"],
    )
    op.create_index("ix_tracking_runs_job_id", "tracking_runs", ["job_id"])
    op.create_index("ix_tracking_runs_flow_run", "tracking_runs", ["flow_run"])
    for table, value_type in (("tracking_params", sa.Text()), ("tracking_tags", sa.Text())):
        op.create_table(
            table,
            sa.Column("run_id", _BIG_ID, nullable=False),
            sa.Column("key", sa.String(250), nullable=False),
            sa.Column("value", value_type, nullable=False),
            sa.PrimaryKeyConstraint("run_id", "key", name=f"pk_{table}"),
            _run_fk(table),
        )
    op.create_index("ix_tracking_params_key", "tracking_params", ["key"])
    _points("tracking_metrics")
    _points("tracking_system_metrics")
    op.create_table(
        "tracking_latest_metrics",
        sa.Column("run_id", _BIG_ID, nullable=False),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "key", name="pk_tracking_latest_metrics"),
        _run_fk("tracking_latest_metrics"),
    )
    op.create_index(
        "ix_tracking_latest_metrics_key_value", "tracking_latest_metrics", ["key", "value"]
    )
    op.create_table(
        "tracking_inputs",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("run_id", _BIG_ID, nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("commit_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("hit", sa.Boolean(), nullable=True),
        sa.Column("fill_seconds", sa.Float(), nullable=True),
        sa.Column("files", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("reader", sa.String(64), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tracking_inputs"),
        _run_fk("tracking_inputs"),
    )
    op.create_index("ix_tracking_inputs_run_id", "tracking_inputs", ["run_id"])
    op.create_table(
        "tracking_artifacts",
        sa.Column("run_id", _BIG_ID, nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "path", name="pk_tracking_artifacts"),
        _run_fk("tracking_artifacts"),
    )
    op.create_table(
        "tracking_log_chunks",
        sa.Column("run_id", _BIG_ID, nullable=False),
        sa.Column("stream", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("start_byte", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "stream", "seq", name="pk_tracking_log_chunks"),
        _run_fk("tracking_log_chunks"),
    )


def downgrade() -> None:
    for table in (
        "tracking_log_chunks",
        "tracking_artifacts",
        "tracking_inputs",
        "tracking_latest_metrics",
        "tracking_system_metrics",
        "tracking_metrics",
        "tracking_tags",
        "tracking_params",
        "tracking_runs",
        "tracking_experiments",
    ):
        op.drop_table(table)
