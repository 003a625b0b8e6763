"""Topology and caches: sites, cache volumes, compute resources, caches and their leases.

Revision ID: 0002
Revises: 0001

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_HEX64 = sa.String(64)
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sites"),
        sa.UniqueConstraint("name", name="uq_sites_name"),
    )
    op.create_table(
        "volumes",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("site_id", _BIG_ID, nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("capacity", sa.BigInteger(), nullable=False),
        sa.Column("ttl_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_volumes"),
        sa.UniqueConstraint("name", name="uq_volumes_name"),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_volumes_site_id_sites", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_volumes_site_id", "volumes", ["site_id"])
    op.create_table(
        "compute_resources",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("site_id", _BIG_ID, nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_compute_resources"),
        sa.UniqueConstraint("name", name="uq_compute_resources_name"),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_compute_resources_site_id_sites", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "compute_volumes",
        sa.Column("compute_id", _BIG_ID, nullable=False),
        sa.Column("volume_id", _BIG_ID, nullable=False),
        sa.PrimaryKeyConstraint("compute_id", "volume_id", name="pk_compute_volumes"),
        sa.ForeignKeyConstraint(
            ["compute_id"],
            ["compute_resources.id"],
            name="fk_compute_volumes_compute_id_compute_resources",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["volume_id"],
            ["volumes.id"],
            name="fk_compute_volumes_volume_id_volumes",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "caches",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("dataset_id", _BIG_ID, nullable=False),
        sa.Column("commit_id", _HEX64, nullable=False),
        sa.Column("volume_id", _BIG_ID, nullable=False),
        sa.Column("subpath", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("files", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("done_bytes", sa.BigInteger(), nullable=False),
        sa.Column("linked_bytes", sa.BigInteger(), nullable=False),
        sa.Column("fetched_bytes", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("ready_at", _TS, nullable=True),
        sa.Column("last_used_at", _TS, nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("heartbeat_at", _TS, nullable=True),
        sa.Column("request", sa.String(16), nullable=True),
        sa.Column("report", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_caches"),
        sa.CheckConstraint(
            "state IN ('pending', 'filling', 'ready', 'evicting', 'evicted', 'failed')",
            name="ck_caches_state",
        ),
        sa.UniqueConstraint(
            "volume_id", "commit_id", "subpath", name="uq_caches_volume_id_commit_id_subpath"
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name="fk_caches_dataset_id_datasets",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["commit_id"], ["commits.id"], name="fk_caches_commit_id_commits"),
        sa.ForeignKeyConstraint(
            ["volume_id"], ["volumes.id"], name="fk_caches_volume_id_volumes", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_caches_state", "caches", ["state"])
    op.create_table(
        "leases",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("cache_id", _BIG_ID, nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_leases"),
        sa.ForeignKeyConstraint(
            ["cache_id"], ["caches.id"], name="fk_leases_cache_id_caches", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_leases_cache_id", "leases", ["cache_id"])


def downgrade() -> None:
    for table in ("leases", "caches", "compute_volumes", "compute_resources", "volumes", "sites"):
        op.drop_table(table)
