"""The catalog's tables, as SQLAlchemy Core objects that queries are built from.

The schema itself is created and changed only by the Alembic migrations in
``migrations/versions/``; these definitions must describe what the latest
migration leaves behind (``tests/catalog/test_migrations.py`` compares the two).
A migration is a frozen record of one change, so it never imports this module.
Later concerns (sites, volumes, caches, ...) put their tables in their own
``<concern>_tables.py`` on this same :data:`metadata`; the schema test imports
every module of this package whose name ends in ``tables``.

Constraint names follow :data:`NAMING_CONVENTION`, so a later migration can
drop or alter a constraint by name on PostgreSQL and in SQLite batch mode alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Alembic's bookkeeping table; prefixed so a shared PostgreSQL database can hold other apps.
VERSION_TABLE = "lakecache_schema_version"

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: Digests and commit ids are 64 lowercase hex characters (BLAKE3).
HEX64 = String(64)
#: Surrogate integer keys: BIGINT on PostgreSQL, INTEGER on SQLite (only that aliases the rowid).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC.

    SQLite stores datetimes as naive text, PostgreSQL as ``timestamptz``; this
    makes both return the same kind of value, so callers can compare them.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"catalog timestamps must be timezone-aware datetimes, not {value!r}")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Digest(TypeDecorator[str]):
    """A BLAKE3 digest: hex text in Python, 32 raw bytes in the database. Never NULL.

    Half the size of hex text, which matters for the largest table: the blob
    index grows by one row per distinct file ever committed, and random keys
    touch most of its B-tree pages on every batch insert. The conversions are
    the bare C functions (no None check, no wrapper), because lookups run them
    for hundreds of thousands of digests at a time.
    """

    impl = LargeBinary(32)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        return bytes.fromhex

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        return bytes.hex


datasets = Table(
    "datasets",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("owner", String(255), nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("name"),
)

commits = Table(
    "commits",
    metadata,
    # ``seq`` records insertion order: the tie-break when two commits share a timestamp.
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("id", HEX64, nullable=False),
    Column("dataset_id", BigId, ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False),
    Column("manifest", HEX64, nullable=False),
    Column("author", String(255), nullable=False),
    Column("message", Text, nullable=False),
    # Kept as the exact text of Commit.created_at: the commit id hashes that text.
    Column("created_at", String(64), nullable=False),
    Column("file_count", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    UniqueConstraint("id"),
    Index(None, "dataset_id", "created_at"),
)

commit_parents = Table(
    "commit_parents",
    metadata,
    Column("commit_id", HEX64, ForeignKey("commits.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("parent_id", HEX64, ForeignKey("commits.id"), nullable=False),
    Index(None, "parent_id"),
)

refs = Table(
    "refs",
    metadata,
    Column("dataset_id", BigId, ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("commit_id", HEX64, ForeignKey("commits.id"), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("kind IN ('branch', 'tag')", name="kind"),
    Index(None, "commit_id"),
)

packs = Table(
    "packs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("blob_count", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", Digest, primary_key=True),
    Column("size", BigInteger, nullable=False),
    # NULL: the blob is an object of its own (``blobs/ab/cdef...``). Not a foreign
    # key: record_pack writes the pack row and its blob rows in one transaction, and
    # on PostgreSQL a per-row foreign-key check costs as much as the insert itself.
    Column("pack_id", String(64), nullable=True),
    Column("pack_offset", BigInteger, nullable=False),
)

#: The blobs each dataset may name through a server: those its commits hold and those
#: its writers uploaded for it (read back and hashed by the server). Knowing a digest
#: grants nothing; see :mod:`lakecache.catalog.blobs`.
dataset_blobs = Table(
    "dataset_blobs",
    metadata,
    Column("dataset_id", BigId, ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", Digest, primary_key=True),
)

#: Commits whose blobs ``dataset_blobs`` holds (commits made without a server are folded in
#: when a server first needs them).
dataset_blob_commits = Table(
    "dataset_blob_commits",
    metadata,
    Column("commit_id", HEX64, ForeignKey("commits.id", ondelete="CASCADE"), primary_key=True),
)
