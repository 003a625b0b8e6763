"""Job outputs and time limits (the compute work that finishes jobs).

Revision ID: 0011
Revises: 0010

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

revision = "0011"
down_revision: str | None = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
