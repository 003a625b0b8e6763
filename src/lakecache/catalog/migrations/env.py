"""Alembic environment for the catalog: runs only on the connection the catalog hands in.

:meth:`lakecache.catalog.Catalog.open` calls ``alembic.command.upgrade`` with
the connection in ``config.attributes["connection"]``, already inside a
transaction that holds the migration lock. Alembic then runs every step in
that transaction, so two processes opening a new catalog at once never both
create the tables. There is no ``alembic.ini`` and no offline (``--sql``) mode.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from lakecache.catalog.tables import VERSION_TABLE, metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "lakecache migrations run through lakecache.catalog.Catalog.open(url), "
            "which passes its connection in config.attributes['connection']"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("lakecache migrations have no offline (--sql) mode")
run_migrations_online()
