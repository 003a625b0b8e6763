"""Tables for compute capacity, templates, queues, jobs, their attempts and timelines (0009),
the tokens a job runs with (0010), job outputs, time limits and the presence of
job runners (0011), and the keys of timeline entries a runner may send again (0014).

Registered on the catalog's one :data:`~lakecache.catalog.tables.metadata`, so
the schema test compares them with what migration 0009 creates. CPU is kept in
millicores (integers add up exactly); memory in bytes; named resources as a
JSON object of integer counts.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
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

JOB_STATES = ("queued", "placed", "running", "succeeded", "failed", "cancelled")
QUEUE_POLICIES = ("order", "data")

compute_capacity = Table(
    "compute_capacity",
    metadata,
    Column(
        "compute_id",
        BigId,
        ForeignKey("compute_resources.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("cpu_milli", BigInteger, nullable=False),
    Column("memory", BigInteger, nullable=False),
    Column("gpu", Integer, nullable=False),
    Column("resources", Text, nullable=False),
    # Bumped by every admission on this resource: the compare-and-swap that
    # serialises admissions, whichever process or machine makes them.
    Column("admissions", BigInteger, nullable=False),
)

compute_templates = Table(
    "compute_templates",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column(
        "compute_id", BigId, ForeignKey("compute_resources.id", ondelete="CASCADE"), nullable=False
    ),
    Column("cpu_milli", BigInteger, nullable=False),
    Column("memory", BigInteger, nullable=False),
    Column("gpu", Integer, nullable=False),
    Column("resources", Text, nullable=False),
    Column("image", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("name"),
    Index(None, "compute_id"),
)

compute_queues = Table(
    "compute_queues",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("policy", String(16), nullable=False),
    # NULL: a job waits as long as it takes for room.
    Column("pending_deadline_seconds", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # 0011: the time limit of jobs that set none (NULL: none), and what jobs do when a
    # site's agent is down (NULL: wait; 'move': on to a site with a live agent).
    Column("job_timeout_seconds", Integer, nullable=True),
    Column("agent_down", String(16), nullable=True),
    CheckConstraint("policy IN ('order', 'data')", name="policy"),
    UniqueConstraint("name"),
)

compute_queue_templates = Table(
    "compute_queue_templates",
    metadata,
    Column(
        "queue_id", BigId, ForeignKey("compute_queues.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("position", Integer, primary_key=True),
    Column("template_id", BigId, ForeignKey("compute_templates.id"), nullable=False),
    Index(None, "template_id"),
)

compute_jobs = Table(
    "compute_jobs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("queue_id", BigId, ForeignKey("compute_queues.id"), nullable=False),
    Column("state", String(16), nullable=False),
    # JSON: the argv list, the extra environment, the inputs as resolved at submit.
    Column("command", Text, nullable=False),
    Column("env", Text, nullable=False),
    Column("inputs", Text, nullable=False),
    Column("image", Text, nullable=True),
    # What the job asks for; it fits a template at least this large.
    Column("cpu_milli", BigInteger, nullable=False),
    Column("memory", BigInteger, nullable=False),
    Column("gpu", Integer, nullable=False),
    Column("resources", Text, nullable=False),
    Column("submitted_by", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # From the queue's pending deadline at submit; a job still queued then fails.
    Column("deadline_at", UTCDateTime, nullable=True),
    # Where it was placed, and the size of the slot it holds there (the template's
    # size when placed, so later template edits cannot skew the resource's usage).
    Column(
        "template_id", BigId, ForeignKey("compute_templates.id", ondelete="SET NULL"), nullable=True
    ),
    Column(
        "compute_id", BigId, ForeignKey("compute_resources.id", ondelete="SET NULL"), nullable=True
    ),
    Column("slot_cpu_milli", BigInteger, nullable=False),
    Column("slot_memory", BigInteger, nullable=False),
    Column("slot_gpu", Integer, nullable=False),
    Column("slot_resources", Text, nullable=False),
    # JSON: for each template of the queue, why it was or was not chosen.
    Column("placement", Text, nullable=True),
    # The fencing token: the number of the attempt that may report; bumped at each start.
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("worker", String(255), nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    Column("cancel_requested", Boolean, nullable=False),
    Column("exit_code", Integer, nullable=True),
    Column("reason", Text, nullable=True),
    # The attempt's folder on the agent's machine: its log file and outputs folder.
    Column("workdir", Text, nullable=True),
    # 0011: seconds an attempt may run (NULL: no limit); the manifest (in the lake) of
    # the outputs collected at its end, with their count and bytes.
    Column("timeout_seconds", Integer, nullable=True),
    Column("outputs_manifest", String(64), nullable=True),
    Column("outputs_files", Integer, nullable=True),
    Column("outputs_bytes", BigInteger, nullable=True),
    CheckConstraint(
        "state IN ('queued', 'placed', 'running', 'succeeded', 'failed', 'cancelled')",
        name="state",
    ),
    Index(None, "state"),
    Index(None, "compute_id", "state"),
)

compute_job_events = Table(
    "compute_job_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("compute_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    # 0014: the runner's own name for the entry (random hex; NULL: none), so that an entry
    # sent again after its connection broke is written once.
    Column("key", String(64), nullable=True),
    Index(None, "job_id"),
    Index(None, "job_id", "key", unique=True),
)

compute_job_attempts = Table(
    "compute_job_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("compute_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("worker", String(255), nullable=False),
    Column("compute_id", BigId, ForeignKey("compute_resources.id", ondelete="SET NULL")),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("outcome", String(16), nullable=True),
    UniqueConstraint("job_id", "number"),
)

compute_job_tokens = Table(
    "compute_job_tokens",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("compute_jobs.id", ondelete="CASCADE"), nullable=False),
    # The attempt it was minted for: it authenticates only while that attempt runs.
    Column("attempt", Integer, nullable=False),
    Column("prefix", String(32), nullable=False),
    # SHA-256 of the whole token, as for API tokens; the secret is never stored.
    Column("token_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    UniqueConstraint("prefix"),
    Index(None, "job_id"),
)

compute_job_outputs = Table(
    "compute_job_outputs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", BigId, ForeignKey("compute_jobs.id", ondelete="CASCADE"), nullable=False),
    # The attempt whose outputs these are: the one that ended and reported.
    Column("attempt", Integer, nullable=False),
    # Relative to the outputs folder, '/'-separated, normalised (no '..', not absolute).
    Column("path", Text, nullable=False),
    # BLAKE3 of the bytes: the blob in the lake (a pack or alone), as for commits.
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mode", Integer, nullable=False),
    Index(None, "job_id"),
)

compute_runners = Table(
    "compute_runners",
    metadata,
    # A site agent's job runner (host:pid:site, prefixed by its user through a server),
    # and when it last ran a pass: a site with none seen lately has its agent down.
    Column("worker", String(255), primary_key=True),
    Column("site", String(64), nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
    Index(None, "site"),
)
