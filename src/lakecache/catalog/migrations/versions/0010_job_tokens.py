"""Job-scoped tokens: what a running job authenticates with to read its inputs.

Minted when an attempt starts (through a server), stored as a SHA-256 like API
tokens; one authenticates only while its attempt is the job's running one.

Revision ID: 0010
Revises: 0009

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "compute_job_tokens",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id",
            _BIG_ID,
            sa.ForeignKey("compute_jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.UniqueConstraint("prefix"),
    )
    op.create_index("ix_compute_job_tokens_job_id", "compute_job_tokens", ["job_id"])


def downgrade() -> None:
    op.drop_table("compute_job_tokens")
