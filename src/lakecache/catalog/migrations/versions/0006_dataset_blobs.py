"""Which blobs each dataset may name: knowing a digest grants nothing.

``dataset_blobs`` holds, per dataset, the blobs its commits hold and those its
writers uploaded for it (bytes the server read back and hashed). Through a
server, ``known``, ``locate`` and a new commit consider only these.
``dataset_blob_commits`` lists the commits already folded in, so that commits
made without a server (which never touch this table) are folded in later.

Revision ID: 0006
Revises: 0005

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dataset_blobs",
        sa.Column("dataset_id", _ID, nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name="fk_dataset_blobs_dataset_id_datasets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_id", "digest", name="pk_dataset_blobs"),
    )
    op.create_table(
        "dataset_blob_commits",
        sa.Column("commit_id", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["commit_id"],
            ["commits.id"],
            name="fk_dataset_blob_commits_commit_id_commits",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("commit_id", name="pk_dataset_blob_commits"),
    )


def downgrade() -> None:
    op.drop_table("dataset_blob_commits")
    op.drop_table("dataset_blobs")
