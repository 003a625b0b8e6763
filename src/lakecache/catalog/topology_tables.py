"""Tables for sites, cache volumes, compute resources, caches and leases (migration 0002 on)."""

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

from lakecache.catalog.tables import HEX64, BigId, UTCDateTime, metadata

CACHE_STATES = ("pending", "filling", "ready", "evicting", "evicted", "failed")

sites = Table(
    "sites",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("name"),
)

volumes = Table(
    "volumes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("site_id", BigId, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    # The path where the volume is mounted on every node of its site.
    Column("root", Text, nullable=False),
    Column("capacity", BigInteger, nullable=False),
    Column("ttl_seconds", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The filesystem's free and total bytes as an agent at the site last saw them.
    Column("fs_free", BigInteger, nullable=True),
    Column("fs_total", BigInteger, nullable=True),
    Column("fs_reported_at", UTCDateTime, nullable=True),
    UniqueConstraint("name"),
    Index(None, "site_id"),
)

compute_resources = Table(
    "compute_resources",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("site_id", BigId, ForeignKey("sites.id", ondelete="CASCADE"), nullable=False),
    Column("backend", String(32), nullable=False),
    Column("config", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("name"),
)

compute_volumes = Table(
    "compute_volumes",
    metadata,
    Column(
        "compute_id",
        BigId,
        ForeignKey("compute_resources.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("volume_id", BigId, ForeignKey("volumes.id", ondelete="CASCADE"), primary_key=True),
)

caches = Table(
    "caches",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dataset_id", BigId, ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False),
    Column("commit_id", HEX64, ForeignKey("commits.id"), nullable=False),
    Column("volume_id", BigId, ForeignKey("volumes.id", ondelete="CASCADE"), nullable=False),
    # '' for the whole commit, else one normalised folder or file of it.
    Column("subpath", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("files", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("done_bytes", BigInteger, nullable=False),
    Column("linked_bytes", BigInteger, nullable=False),
    Column("fetched_bytes", BigInteger, nullable=False),
    Column("error", Text, nullable=True),
    Column("pinned", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("ready_at", UTCDateTime, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=False),
    # Who is filling it, and when they last said so (a dead filler's claim goes stale).
    Column("worker", String(255), nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    # The fence token: raised by every claim of the row (a fill, an eviction, a
    # takeover of either) and presented by every later step of that worker, so a
    # worker that was paused and taken over cannot undo a newer one (0007).
    Column("fence_token", BigInteger, nullable=False, server_default="0"),
    # Work asked of the site's agent besides filling: 'verify', 'repair' or 'evict'.
    Column("request", String(16), nullable=True),
    Column("report", Text, nullable=True),
    CheckConstraint(
        "state IN ('pending', 'filling', 'ready', 'evicting', 'evicted', 'failed')", name="state"
    ),
    UniqueConstraint("volume_id", "commit_id", "subpath"),
    Index(None, "state"),
)

leases = Table(
    "leases",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("cache_id", BigId, ForeignKey("caches.id", ondelete="CASCADE"), nullable=False),
    Column("holder", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Renewed by the holder's heartbeat; a holder that dies stops renewing and the lease lapses.
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "cache_id"),
)
