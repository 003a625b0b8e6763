"""Tracking: experiments, runs, params, metrics, system metrics, tags and artifacts.

Revision ID: 0012
Revises: 0011

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

revision = "0012"
down_revision: str | None = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
