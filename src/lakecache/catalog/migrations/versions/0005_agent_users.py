"""Agent users: an account that a site's agent runs as, bound to that site.

Such a user may read, fill, verify and evict the caches on its site's volumes,
and read from the lake what those caches hold; nothing else. A site machine
then holds no org admin's token.

Revision ID: 0005
Revises: 0004

Frozen once shipped: change the schema with a new file, never by editing this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("agent_site", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("agent_site")
