"""Tables of flows (0013): runs and their task instances, each with the job it ran as.

Registered on the catalog's one :data:`~lakecache.catalog.tables.metadata`, so
the schema test compares them with what migration 0013 creates.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from lakecache.catalog.tables import BigId, UTCDateTime, metadata

RUN_STATES = ("running", "succeeded", "failed", "cancelled")
TASK_STATES = ("pending", "running", "succeeded", "failed", "cancelled", "skipped")

flow_runs = Table(
    "flow_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("flow", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    # The flow as written (YAML or JSON) and the params it ran with (JSON).
    Column("source", Text, nullable=False),
    Column("params", Text, nullable=False),
    # The code the flow ran from: git commit (and a hash of the uncommitted diff).
    Column("code_version", Text, nullable=False),
    Column("submitted_by", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("reason", Text, nullable=True),
    # Who advances the run now, until when: one advancer at a time, taken over
    # when it goes silent (a restarted server, a --wait that was interrupted).
    Column("owner", String(255), nullable=True),
    Column("owner_until", UTCDateTime, nullable=True),
    CheckConstraint("state IN ('running', 'succeeded', 'failed', 'cancelled')", name="state"),
    Index(None, "state"),
)

flow_tasks = Table(
    "flow_tasks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", BigId, ForeignKey("flow_runs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(512), nullable=False),
    Column("task", String(64), nullable=False),
    # Position in the plan (deps come first): the order tasks are shown and submitted in.
    Column("position", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    # JSON: the planned task (command rendered, queue, inputs, outputs, deps...).
    Column("spec", Text, nullable=False),
    Column("job_id", BigId, ForeignKey("compute_jobs.id", ondelete="SET NULL"), nullable=True),
    # JSON list of every job this task ran as, oldest first (retries, resumes).
    Column("jobs", Text, nullable=False),
    Column("tries", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("reason", Text, nullable=True),
    Column("timed_out", Boolean, nullable=False),
    # JSON: the dataset commits read, {input: [dataset, commit, mode]} (lineage's left side).
    Column("input_commits", Text, nullable=True),
    # The task's outputs folder as committed to the flow's artifacts dataset, and
    # JSON {output: [dataset, commit]} for outputs committed to datasets of their own.
    Column("output_dataset", String(64), nullable=True),
    Column("output_commit", String(64), nullable=True),
    Column("output_commits", Text, nullable=True),
    # Memoisation: the hash of what decides the result; the task reused, if any.
    Column("memo_key", String(64), nullable=True),
    Column("reused_from", BigId, nullable=True),
    CheckConstraint(
        "state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')",
        name="state",
    ),
    UniqueConstraint("run_id", "name"),
    Index(None, "run_id", "position"),
    Index(None, "memo_key"),
    Index(None, "job_id"),
)
