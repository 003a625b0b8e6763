"""Flows: flow definitions, flow runs and their tasks.

Revision ID: 0013
Revises: 0012

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

revision = "0013"
down_revision: str | None = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
