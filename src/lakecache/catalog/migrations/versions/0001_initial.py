"""Initial catalog: datasets, commits and their parents, refs, packs and blobs.

Revision ID: 0001
Revises: (none)

Frozen: this file describes the schema as it was first shipped. Change the
schema with a new file (``0002_<what>.py`` with ``down_revision = "0001"``),
never by editing this one, since catalogs in the field have already run it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_HEX64 = sa.String(64)
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.UniqueConstraint("name", name="uq_datasets_name"),
    )
    op.create_table(
        "commits",
        sa.Column("seq", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("id", _HEX64, nullable=False),
        sa.Column("dataset_id", _BIG_ID, nullable=False),
        sa.Column("manifest", _HEX64, nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(64), nullable=False),
        sa.Column("file_count", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_commits"),
        sa.UniqueConstraint("id", name="uq_commits_id"),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name="fk_commits_dataset_id_datasets",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_commits_dataset_id_created_at", "commits", ["dataset_id", "created_at"])
    op.create_table(
        "commit_parents",
        sa.Column("commit_id", _HEX64, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("parent_id", _HEX64, nullable=False),
        sa.PrimaryKeyConstraint("commit_id", "position", name="pk_commit_parents"),
        sa.ForeignKeyConstraint(
            ["commit_id"],
            ["commits.id"],
            name="fk_commit_parents_commit_id_commits",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["commits.id"], name="fk_commit_parents_parent_id_commits"
        ),
    )
    op.create_index("ix_commit_parents_parent_id", "commit_parents", ["parent_id"])
    op.create_table(
        "refs",
        sa.Column("dataset_id", _BIG_ID, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("commit_id", _HEX64, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", "name", name="pk_refs"),
        sa.CheckConstraint("kind IN ('branch', 'tag')", name="ck_refs_kind"),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name="fk_refs_dataset_id_datasets", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["commit_id"], ["commits.id"], name="fk_refs_commit_id_commits"),
    )
    op.create_index("ix_refs_commit_id", "refs", ["commit_id"])
    op.create_table(
        "packs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("blob_count", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_packs"),
    )
    op.create_table(
        "blobs",
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("pack_id", sa.String(64), nullable=True),
        sa.Column("pack_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_blobs"),
    )


def downgrade() -> None:
    for table in ("blobs", "packs", "refs", "commit_parents", "commits", "datasets"):
        op.drop_table(table)
