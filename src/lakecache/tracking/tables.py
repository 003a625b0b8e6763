"""Tables of run tracking (migration 0012): experiments, runs and what each run recorded.

Registered on the catalog's one :data:`~lakecache.catalog.tables.metadata`, so the
schema test compares them with what migration 0012 creates.

Metric points are stored in chunks (see :func:`_chunks`). The latest point of each
metric is a row of its own, a float with one twist: SQLite turns a NaN into NULL, so
there NaN is stored as NULL on both backends (``value IS NULL`` means NaN) and
infinities as themselves. Metric timestamps are epoch milliseconds (integers: cheap to insert by
the hundred thousand, and what MLflow's API speaks). Artifacts and logs live in the
lake, content-addressed (:mod:`lakecache.tracking.objects`); the catalog holds their
digests only.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from lakecache.catalog.tables import BigId, UTCDateTime, metadata

RUN_STATES = ("running", "finished", "failed", "killed")
#: The longest metric, param or tag key (MLflow allows 250 as well).
KEY_MAX = 250
#: The longest param value (MLflow: 6000) and tag value (MLflow: 8000).
PARAM_VALUE_MAX = 6000
TAG_VALUE_MAX = 8000

tracking_experiments = Table(
    "tracking_experiments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    # Empty: a shared experiment every user sees (Default, jobs, flows).
    Column("owner", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("name"),
)

tracking_runs = Table(
    "tracking_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "experiment_id",
        BigId,
        ForeignKey("tracking_experiments.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(255), nullable=False),
    Column("user_name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    # JSON: the argv list; the environment's versions; the code version.
    Column("command", Text, nullable=False),
    Column("env", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("job_id", BigInteger, nullable=True),
    Column("job_attempt", Integer, nullable=True),
    Column("flow_run", String(64), nullable=True),
    Column("flow_task", String(255), nullable=True),
    Column("exit_code", Integer, nullable=True),
    CheckConstraint(
        "status IN ('running', 'finished', 'failed', 'killed')",
        name="status",
    ),
    Index(None, "experiment_id", "started_at"),
    Index(None, "job_id"),
    Index(None, "flow_run"),
)

tracking_params = Table(
    "tracking_params",
    metadata,
    Column("run_id", BigId, ForeignKey("tracking_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(KEY_MAX), primary_key=True),
    Column("value", Text, nullable=False),
    Index(None, "key"),
)

tracking_tags = Table(
    "tracking_tags",
    metadata,
    Column("run_id", BigId, ForeignKey("tracking_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(KEY_MAX), primary_key=True),
    Column("value", Text, nullable=False),
)


def _chunks(name: str) -> Table:
    """A table of metric points stored as chunks: one row per key per batch, holding
    the batch's steps, timestamps and values as packed little-endian arrays.

    Why not one row per point: a B-tree insert per point (and its index entry)
    made 100,000 points cost seconds on SQLite; a row per key per batch costs
    100 rows for them, and NaN and infinities are kept bit for bit. A series is
    read back by concatenating its chunks (:mod:`lakecache.tracking.points`).
    No foreign key: a run's chunks go with it (``TrackingStore.delete_run``).
    """
    return Table(
        name,
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("run_id", BigInteger, nullable=False),
        Column("key", String(KEY_MAX), nullable=False),
        Column("first_step", BigInteger, nullable=False),
        Column("last_step", BigInteger, nullable=False),
        Column("count", Integer, nullable=False),
        # int64 steps, int64 epoch-millisecond times, float64 values.
        Column("steps", LargeBinary, nullable=False),
        Column("times", LargeBinary, nullable=False),
        Column("vals", LargeBinary, nullable=False),
        Index(None, "run_id", "key", "first_step"),
    )


tracking_metrics = _chunks("tracking_metrics")
tracking_system_metrics = _chunks("tracking_system_metrics")

#: The latest point of each metric of each run: what the runs table sorts and filters on.
tracking_latest_metrics = Table(
    "tracking_latest_metrics",
    metadata,
    Column("run_id", BigId, ForeignKey("tracking_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(KEY_MAX), primary_key=True),
    Column("step", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("value", Float, nullable=True),
    Index(None, "key", "value"),
)

tracking_inputs = Table(
    "tracking_inputs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", BigId, ForeignKey("tracking_runs.id", ondelete="CASCADE"), nullable=False),
    Column("dataset", String(64), nullable=False),
    Column("commit_id", String(64), nullable=False),
    # cache | stream
    Column("source", String(16), nullable=False),
    # Whether a cache was ready when asked (NULL: not known, or streamed).
    Column("hit", Boolean, nullable=True),
    Column("fill_seconds", Float, nullable=True),
    Column("files", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("reader", String(64), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "run_id"),
)

tracking_artifacts = Table(
    "tracking_artifacts",
    metadata,
    Column("run_id", BigId, ForeignKey("tracking_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

#: A run's logs, as chunks appended in order: each chunk one content-addressed lake object.
tracking_log_chunks = Table(
    "tracking_log_chunks",
    metadata,
    Column("run_id", BigId, ForeignKey("tracking_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("stream", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True),
    # Byte offset of this chunk in the whole log.
    Column("start_byte", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
)
