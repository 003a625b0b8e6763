"""The catalog: datasets, commits, refs and the blob index, in one SQL database.

One code path serves both backends: a SQLite file (the embedded default) and
PostgreSQL (teams), through SQLAlchemy Core. The schema is owned by the Alembic
migrations shipped in ``migrations/``; :meth:`Catalog.open` brings any catalog
to the latest version before handing it out.

Concurrency, the part callers must be able to trust:

* Every change is one transaction, so a crash leaves the old state or the new.
* Moving a branch is a compare-and-swap inside the transaction that adds the
  commit: ``UPDATE refs ... WHERE commit_id = :expected`` (or an insert that
  does nothing if the ref exists, for a first commit), then a check of the row
  count. Two writers on the same parent: exactly one moves the branch, the
  other gets :class:`~lakecache.errors.ConflictError` and its commit row is
  rolled back. On PostgreSQL the row lock makes the loser re-check the new row;
  on SQLite every write transaction starts with ``BEGIN IMMEDIATE``, so writers
  queue on the database lock (``busy_timeout``) instead of failing with
  "database is locked" when a read lock cannot be upgraded.
* SQLite runs in WAL mode, so readers never wait for the writer.
* PostgreSQL reads run in autocommit: at its READ COMMITTED level every statement
  of a read transaction takes its own snapshot anyway, so a BEGIN and a ROLLBACK
  (two round trips around every read) bought no consistency. A pooled connection
  is pinged before use only when it sat idle in the pool (a restarted database),
  not on every checkout.
* Migrations run under a lock (PostgreSQL advisory lock, SQLite write lock), so
  two processes opening a new catalog at once create the tables only once.

The blob index, and what its lookups cost, is in :mod:`lakecache.catalog.blobs`.
"""

from __future__ import annotations

import functools
import heapq
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from sqlalchemy import (
    Engine,
    Select,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import BindParameter

from lakecache.catalog import tables as t
from lakecache.catalog.blobs import BlobIndex
from lakecache.catalog.journal import Journal
from lakecache.catalog.names import HEAD_ALIASES, MAIN, check_dataset_name, check_ref_name
from lakecache.errors import (
    AlreadyExistsError,
    AmbiguousRefError,
    CatalogError,
    ConflictError,
    DatasetNotFoundError,
    NotFoundError,
    UserError,
)
from lakecache.lake.objects import Commit

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: Shortest commit-id prefix :meth:`Catalog.resolve` accepts.
MIN_PREFIX = 4
#: How long a SQLite writer waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Address space SQLite may map per connection (not memory: pages are shared with the OS cache).
SQLITE_MMAP_BYTES = 256 * 1024 * 1024
#: ``pg_advisory_xact_lock`` key that serialises migrations ("lakecach" in ASCII).
_MIGRATION_LOCK_KEY = 0x6C616B6563616368
_WRITE_OPTION = "lakecache_write"
#: PostgreSQL connections kept open per process: one per server thread that can be in a
#: catalog call at once (the server's 40 worker threads, minus a margin) costs nothing
#: until used, where a pool smaller than the concurrency closes and reopens connections
#: (a new backend process each) all the time under load.
PG_POOL_SIZE = 20
PG_MAX_OVERFLOW = 20
#: A pooled PostgreSQL connection idle this long is pinged before use (a database
#: restart or a dropped idle connection is then a fresh connection, not an error).
PG_PING_AFTER_IDLE_S = 10.0
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset as the catalog knows it."""

    id: int
    name: str
    owner: str
    description: str
    created_at: datetime


class DatasetStats(TypedDict):
    """What :meth:`Catalog.dataset_stats` returns: history length and the head's size."""

    commit_count: int
    #: Id of the head of ``main``; None before the first commit.
    head: str | None
    file_count: int
    bytes: int


@functools.cache
def _tags_and_head_query() -> Select[Any]:
    """Tags and main's head of the dataset ``dataset_id`` (a parameter), built once."""
    return (
        select(t.refs.c.commit_id, t.refs.c.name, t.refs.c.kind)
        .where(
            t.refs.c.dataset_id == bindparam("dataset_id"),
            (t.refs.c.kind == "tag") | ((t.refs.c.kind == "branch") & (t.refs.c.name == MAIN)),
        )
        .order_by(t.refs.c.commit_id, t.refs.c.name)
    )


@functools.cache
def _datasets_stats_query() -> Select[Any]:
    """The dataset list's stats query, built once (building it, with its subquery and
    alias, cost more CPU than running it); the ids are an expanding parameter."""
    ids: BindParameter[int] = bindparam("ids", expanding=True)
    counts = (
        select(t.commits.c.dataset_id, func.count().label("commit_count"))
        .where(t.commits.c.dataset_id.in_(ids))
        .group_by(t.commits.c.dataset_id)
        .subquery()
    )
    main = t.refs.alias("main")
    return (
        select(
            t.datasets.c.id,
            counts.c.commit_count,
            t.commits.c.id.label("head"),
            t.commits.c.file_count,
            t.commits.c.bytes,
        )
        .select_from(t.datasets)
        .outerjoin(counts, counts.c.dataset_id == t.datasets.c.id)
        .outerjoin(
            main,
            (main.c.dataset_id == t.datasets.c.id)
            & (main.c.name == MAIN)
            & (main.c.kind == "branch"),
        )
        .outerjoin(t.commits, t.commits.c.id == main.c.commit_id)
        .where(t.datasets.c.id.in_(ids))
    )


class Catalog(BlobIndex):
    """The metadata database. Safe to share between threads; open one per process.

    Build it with :meth:`open`; :meth:`close` (or a ``with`` block) releases
    its connections. The blob index methods (``record_pack``, ``record_blob``,
    ``known_blobs``, ``locate_blobs``) come from :class:`BlobIndex`.
    """

    def __init__(self, engine: Engine) -> None:
        """Wrap a migrated engine built by :func:`_create_engine`; callers use :meth:`open`."""
        self._engine = engine
        self._dialect = engine.dialect.name
        #: Told of every dataset and ref change inside its transaction (the lake's ref log).
        self.journal: Journal | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str) -> Catalog:
        """Connect to ``url`` and migrate the schema to the latest version.

        ``sqlite:///PATH`` creates the parent folder; ``postgresql://`` URLs use
        psycopg 3. Opening is idempotent and safe while other processes open
        the same catalog. Raises :class:`UserError` for an unusable URL and
        :class:`CatalogError` when the database cannot be reached or was
        migrated by a newer lakecache.
        """
        engine = _create_engine(url)
        try:
            _migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def close(self) -> None:
        """Close every pooled connection. The catalog must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The database URL with any password masked, for messages."""
        return self._engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"Catalog({self.url!r})"

    # -- datasets --------------------------------------------------------------------------

    def create_dataset(self, name: str, owner: str, description: str = "") -> DatasetRecord:
        """Register a new, empty dataset. Raises AlreadyExistsError if the name is taken."""
        check_dataset_name(name)
        if not owner or not owner.strip():
            raise UserError(f"dataset {name!r} needs an owner", hint="Give the owner's user name.")
        created_at = _now()
        try:
            with self._write() as conn:
                result = conn.execute(
                    t.datasets.insert().values(
                        name=name, owner=owner, description=description, created_at=created_at
                    )
                )
                (dataset_id,) = result.inserted_primary_key or (None,)
                if self.journal is not None:
                    self.journal.dataset_created(name, owner, description, created_at)
        except sa_exc.IntegrityError as exc:
            raise AlreadyExistsError(
                f"dataset {name!r} already exists",
                hint=f"Choose another name, or commit to the existing one with "
                f"`lakecache data commit {name} PATH`.",
            ) from exc
        assert dataset_id is not None
        return DatasetRecord(int(dataset_id), name, owner, description, created_at)

    def get_dataset(self, name: str) -> DatasetRecord:
        """Return the dataset called ``name``, or raise DatasetNotFoundError."""
        with self._read() as conn:
            row = conn.execute(select(t.datasets).where(t.datasets.c.name == name)).one_or_none()
        if row is None:
            raise _dataset_not_found(name)
        return _dataset_record(row)

    def list_datasets(self) -> list[DatasetRecord]:
        """Every dataset, sorted by name."""
        with self._read() as conn:
            rows = conn.execute(select(t.datasets).order_by(t.datasets.c.name)).all()
        return [_dataset_record(row) for row in rows]

    def dataset_stats(self, name: str) -> DatasetStats:
        """Number of commits, and the file count and bytes of the head of ``main``."""
        with self._read() as conn:
            dataset_id = self._dataset_id(conn, name)
            count = conn.execute(
                select(func.count()).where(t.commits.c.dataset_id == dataset_id)
            ).scalar_one()
            head_row = conn.execute(
                select(t.commits.c.id, t.commits.c.file_count, t.commits.c.bytes)
                .join(t.refs, t.refs.c.commit_id == t.commits.c.id)
                .where(
                    t.refs.c.dataset_id == dataset_id,
                    t.refs.c.name == MAIN,
                    t.refs.c.kind == "branch",
                )
            ).one_or_none()
        if head_row is None:
            return DatasetStats(commit_count=int(count), head=None, file_count=0, bytes=0)
        return DatasetStats(
            commit_count=int(count),
            head=head_row.id,
            file_count=int(head_row.file_count),
            bytes=int(head_row.bytes),
        )

    def datasets_stats(self, dataset_ids: list[int]) -> dict[int, DatasetStats]:
        """:meth:`dataset_stats` of many datasets at once, by id, in one query."""
        if not dataset_ids:
            return {}
        q = _datasets_stats_query()
        with self._read() as conn:
            rows = conn.execute(q, {"ids": dataset_ids}).all()
        out = {
            i: DatasetStats(commit_count=0, head=None, file_count=0, bytes=0) for i in dataset_ids
        }
        for row in rows:
            out[row.id] = DatasetStats(
                commit_count=int(row.commit_count or 0),
                head=row.head,
                file_count=int(row.file_count or 0),  # None: no head (an outer join)
                bytes=int(row.bytes or 0),
            )
        return out

    # -- commits and refs ------------------------------------------------------------------

    def add_commit(self, commit: Commit, *, expected_head: str | None, branch: str = MAIN) -> str:
        """Add ``commit`` to its dataset and move ``branch`` to it, if the branch is still
        at ``expected_head`` (None: the branch must not exist yet). Returns the commit id.

        One transaction: on :class:`ConflictError` (someone else moved the
        branch first) nothing is kept, and the caller can rebase and retry.
        Parents must already be commits of the same dataset (NotFoundError).
        Adding a commit that exists is harmless.
        """
        check_ref_name(branch, "branch")
        commit_id = commit.id
        with self._write() as conn:
            dataset_id = self._dataset_id(conn, commit.dataset)
            if commit.parents:
                known = set(
                    conn.scalars(
                        select(t.commits.c.id).where(
                            t.commits.c.dataset_id == dataset_id,
                            t.commits.c.id.in_(commit.parents),
                        )
                    )
                )
                missing = [p for p in commit.parents if p not in known]
                if missing:
                    raise NotFoundError(
                        f"parent commit {missing[0]} is not in dataset {commit.dataset!r}",
                        hint=f"Commit on top of a commit listed by `lakecache data log "
                        f"{commit.dataset}`.",
                    )
            inserted = conn.execute(
                self._insert_ignore(t.commits),
                {
                    "id": commit_id,
                    "dataset_id": dataset_id,
                    "manifest": commit.manifest,
                    "author": commit.author,
                    "message": commit.message,
                    "created_at": commit.created_at,
                    "file_count": commit.file_count,
                    "bytes": commit.bytes,
                },
            )
            if inserted.rowcount == 1 and commit.parents:
                conn.execute(
                    t.commit_parents.insert(),
                    [
                        {"commit_id": commit_id, "position": i, "parent_id": p}
                        for i, p in enumerate(commit.parents)
                    ],
                )
            now = _now()
            if expected_head is None:
                moved = conn.execute(
                    self._insert_ignore(t.refs),
                    {
                        "dataset_id": dataset_id,
                        "name": branch,
                        "kind": "branch",
                        "commit_id": commit_id,
                        "updated_at": now,
                    },
                )
            else:
                moved = conn.execute(
                    update(t.refs)
                    .where(
                        t.refs.c.dataset_id == dataset_id,
                        t.refs.c.name == branch,
                        t.refs.c.kind == "branch",
                        t.refs.c.commit_id == expected_head,
                    )
                    .values(commit_id=commit_id, updated_at=now)
                )
            if moved.rowcount != 1:
                current = conn.execute(
                    select(t.refs.c.kind, t.refs.c.commit_id).where(
                        t.refs.c.dataset_id == dataset_id, t.refs.c.name == branch
                    )
                ).one_or_none()
                if current is not None and current.kind != "branch":
                    raise UserError(
                        f"{branch!r} is a tag of dataset {commit.dataset!r}, not a branch",
                        hint="Commit to a branch, or delete the tag first.",
                    )
                raise ConflictError(
                    f"branch {branch!r} of dataset {commit.dataset!r} is at "
                    f"{_describe(current.commit_id if current else None)}, not at "
                    f"{_describe(expected_head)} as expected; commit {commit_id[:12]} was not added"
                )
            if self.journal is not None:
                self.journal.commit_added(commit.dataset, commit_id, branch, expected_head)
        return commit_id

    def head(self, dataset: str, branch: str = MAIN) -> str | None:
        """The commit ``branch`` points at, or None before its first commit."""
        with self._read() as conn:
            dataset_id = self._dataset_id(conn, dataset)
            return self._branch_head(conn, dataset_id, branch)

    def get_commit(self, dataset: str, commit_id: str) -> Commit:
        """The commit with this full id in ``dataset``, or NotFoundError."""
        with self._read() as conn:
            dataset_id = self._dataset_id(conn, dataset)
            row = conn.execute(
                select(t.commits).where(
                    t.commits.c.dataset_id == dataset_id, t.commits.c.id == commit_id
                )
            ).one_or_none()
            if row is None:
                raise NotFoundError(
                    f"no commit {commit_id} in dataset {dataset!r}",
                    hint=f"List commits with `lakecache data log {dataset}`.",
                )
            parents = conn.scalars(
                select(t.commit_parents.c.parent_id)
                .where(t.commit_parents.c.commit_id == commit_id)
                .order_by(t.commit_parents.c.position)
            ).all()
        return _commit(dataset, row, tuple(parents))

    def resolve(self, dataset: str, ref: str | None) -> str:
        """Turn what a user typed after ``NAME@`` into a full commit id.

        In order: None, ``latest``, ``main`` or ``HEAD`` is the head of
        ``main``; a branch or tag name; a full commit id; a unique prefix of at
        least :data:`MIN_PREFIX` hex characters. Raises NotFoundError (also for
        a dataset with no commits yet) or AmbiguousRefError naming the candidates.
        """
        with self._read() as conn:
            dataset_id = self._dataset_id(conn, dataset)
            return self._resolve(conn, dataset_id, dataset, ref)

    def log(self, dataset: str, start: str | None = None, limit: int | None = None) -> list[Commit]:
        """The history reachable from ``start`` (any ref :meth:`resolve` takes; default the
        head of ``main``), newest first, each commit once, all parents of merges followed.

        Loads the dataset's commits in one query and walks them in memory, so a
        history of hundreds of commits takes milliseconds. An empty dataset
        has an empty log.
        """
        with self._read() as conn:
            dataset_id = self._dataset_id(conn, dataset)
            if start is None:
                start_id = self._branch_head(conn, dataset_id, MAIN)
                if start_id is None:
                    return []
            else:
                start_id = self._resolve(conn, dataset_id, dataset, start)
            rows = conn.execute(
                select(t.commits, t.commit_parents.c.parent_id)
                .select_from(
                    t.commits.outerjoin(
                        t.commit_parents, t.commit_parents.c.commit_id == t.commits.c.id
                    )
                )
                .where(t.commits.c.dataset_id == dataset_id)
                .order_by(t.commits.c.seq, t.commit_parents.c.position)
            ).all()
        by_id: dict[str, Any] = {}
        parents: dict[str, list[str]] = {}
        for row in rows:
            by_id.setdefault(row.id, row)
            ids = parents.setdefault(row.id, [])
            if row.parent_id is not None:
                ids.append(row.parent_id)
        # Newest first, as git does: a max-heap on (time, insertion order).
        order = sorted(by_id, key=lambda cid: (_timestamp(by_id[cid].created_at), by_id[cid].seq))
        rank = {cid: i for i, cid in enumerate(order)}
        heap = [(-rank[start_id], start_id)]
        seen = {start_id}
        out: list[Commit] = []
        while heap and (limit is None or len(out) < limit):
            _, cid = heapq.heappop(heap)
            out.append(_commit(dataset, by_id[cid], tuple(parents[cid])))
            for parent in parents[cid]:
                if parent not in seen and parent in rank:
                    seen.add(parent)
                    heapq.heappush(heap, (-rank[parent], parent))
        return out

    def set_tag(self, dataset: str, tag: str, commit_id: str, *, force: bool = False) -> None:
        """Point ``tag`` at a commit (any ref :meth:`resolve` takes).

        Setting a tag to where it already points is a no-op. A tag pointing
        elsewhere raises AlreadyExistsError unless ``force``; a branch of that
        name always does.
        """
        check_ref_name(tag, "tag")
        with self._write() as conn:
            dataset_id = self._dataset_id(conn, dataset)
            target = self._resolve(conn, dataset_id, dataset, commit_id)
            now = _now()
            inserted = conn.execute(
                self._insert_ignore(t.refs),
                {
                    "dataset_id": dataset_id,
                    "name": tag,
                    "kind": "tag",
                    "commit_id": target,
                    "updated_at": now,
                },
            )
            if inserted.rowcount == 1:
                if self.journal is not None:
                    self.journal.tag_set(dataset, tag, target)
                return
            existing = conn.execute(
                select(t.refs.c.kind, t.refs.c.commit_id).where(
                    t.refs.c.dataset_id == dataset_id, t.refs.c.name == tag
                )
            ).one()
            if existing.kind != "tag":
                raise AlreadyExistsError(
                    f"{tag!r} is a branch of dataset {dataset!r}",
                    hint="Choose another tag name.",
                )
            if existing.commit_id == target:
                return
            if not force:
                raise AlreadyExistsError(
                    f"tag {tag!r} of dataset {dataset!r} already points at "
                    f"{existing.commit_id[:12]}",
                    hint="Move it with --force, or choose another tag name.",
                )
            conn.execute(
                update(t.refs)
                .where(t.refs.c.dataset_id == dataset_id, t.refs.c.name == tag)
                .values(commit_id=target, updated_at=now)
            )
            if self.journal is not None:
                self.journal.tag_set(dataset, tag, target)

    def delete_tag(self, dataset: str, tag: str) -> None:
        """Remove a tag (never the commit). NotFoundError if there is no such tag."""
        with self._write() as conn:
            dataset_id = self._dataset_id(conn, dataset)
            deleted = conn.execute(
                delete(t.refs).where(
                    t.refs.c.dataset_id == dataset_id,
                    t.refs.c.name == tag,
                    t.refs.c.kind == "tag",
                )
            )
            if deleted.rowcount == 1 and self.journal is not None:
                self.journal.tag_deleted(dataset, tag)
        if deleted.rowcount != 1:
            raise NotFoundError(
                f"no tag {tag!r} in dataset {dataset!r}",
                hint=f"See the dataset's tags with `lakecache data log {dataset}`.",
            )

    def tags(self, dataset: str) -> dict[str, list[str]]:
        """Every tag of ``dataset``, grouped: commit id -> sorted tag names."""
        with self._read() as conn:
            dataset_id = self._dataset_id(conn, dataset)
            rows = conn.execute(
                select(t.refs.c.commit_id, t.refs.c.name)
                .where(t.refs.c.dataset_id == dataset_id, t.refs.c.kind == "tag")
                .order_by(t.refs.c.commit_id, t.refs.c.name)
            ).all()
        out: dict[str, list[str]] = {}
        for row in rows:
            out.setdefault(row.commit_id, []).append(row.name)
        return out

    def tags_and_head(self, dataset_id: int) -> tuple[dict[str, list[str]], str | None]:
        """:meth:`tags` and :meth:`head` of the dataset with this id, in one query (the pages
        of a commit show both)."""
        with self._read() as conn:
            rows = conn.execute(_tags_and_head_query(), {"dataset_id": dataset_id}).all()
        tags: dict[str, list[str]] = {}
        head = None
        for row in rows:
            if row.kind == "tag":
                tags.setdefault(row.commit_id, []).append(row.name)
            else:
                head = row.commit_id
        return tags, head

    # -- internals -------------------------------------------------------------------------

    @contextmanager
    def _read(self, *, stream: bool = False) -> Iterator[Connection]:
        """A connection for reads; on SQLite one deferred transaction (a consistent snapshot),
        on PostgreSQL autocommit (each statement its own snapshot, as READ COMMITTED gives).
        ``stream``: results read in batches (``yield_per``), which PostgreSQL serves from a
        server-side cursor, and a cursor lives only inside a transaction: one is opened."""
        try:
            with self._engine.connect() as conn:
                if self._dialect == "postgresql" and not stream:
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            raise _catalog_error(self.url, exc) from exc

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction, committed on success and rolled back on any error."""
        try:
            with self._engine.connect() as conn:
                # preserve_rowcount: psycopg forgets the count of an INSERT once
                # SQLAlchemy closes its cursor, and the compare-and-swap reads it.
                conn.execution_options(preserve_rowcount=True, **{_WRITE_OPTION: True})
                with conn.begin():
                    yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            raise _catalog_error(self.url, exc) from exc

    def _insert_ignore(self, table: Table) -> Insert:
        """``INSERT ... ON CONFLICT DO NOTHING`` in this database's dialect."""
        # Each dialect imported when first used: a SQLite catalog never loads PostgreSQL's.
        if self._dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing()

    @staticmethod
    def _dataset_id(conn: Connection, name: str) -> int:
        dataset_id = conn.scalar(select(t.datasets.c.id).where(t.datasets.c.name == name))
        if dataset_id is None:
            raise _dataset_not_found(name)
        return int(dataset_id)

    @staticmethod
    def _branch_head(conn: Connection, dataset_id: int, branch: str) -> str | None:
        head: str | None = conn.scalar(
            select(t.refs.c.commit_id).where(
                t.refs.c.dataset_id == dataset_id,
                t.refs.c.name == branch,
                t.refs.c.kind == "branch",
            )
        )
        return head

    @staticmethod
    def _resolve(conn: Connection, dataset_id: int, dataset: str, ref: str | None) -> str:
        name = MAIN if ref is None or ref in HEAD_ALIASES else ref
        by_name: str | None = conn.scalar(
            select(t.refs.c.commit_id).where(
                t.refs.c.dataset_id == dataset_id, t.refs.c.name == name
            )
        )
        if by_name is not None:
            return by_name
        if name == MAIN:
            raise NotFoundError(
                f"dataset {dataset!r} has no commits yet",
                hint=f"Commit files first with `lakecache data commit {dataset} PATH`.",
            )
        prefix = name.lower()
        if len(prefix) >= MIN_PREFIX and set(prefix) <= _HEX and len(prefix) <= 64:
            # A range instead of LIKE: it uses the unique index on id in every collation,
            # since ids are lowercase hex of one length.
            candidates = conn.scalars(
                select(t.commits.c.id)
                .where(
                    t.commits.c.dataset_id == dataset_id,
                    t.commits.c.id >= prefix,
                    t.commits.c.id <= prefix + "f" * (64 - len(prefix)),
                )
                .order_by(t.commits.c.id)
                .limit(11)
            ).all()
            if len(candidates) == 1:
                found: str = candidates[0]
                return found
            if candidates:
                shown = ", ".join(c[:12] for c in candidates[:10])
                more = " and more" if len(candidates) > 10 else ""
                raise AmbiguousRefError(
                    f"{ref!r} matches several commits of dataset {dataset!r}: {shown}{more}"
                )
        if prefix and set(prefix) <= _HEX and len(prefix) < MIN_PREFIX:
            raise NotFoundError(
                f"{ref!r} is too short to name a commit of dataset {dataset!r}: a commit id "
                f"prefix needs at least {MIN_PREFIX} hex characters",
                hint=f"Copy a longer prefix from `lakecache data log {dataset}`.",
            )
        raise NotFoundError(
            f"no tag or commit {ref!r} in dataset {dataset!r}",
            hint=(
                f"A ref is a tag, `latest` or a commit id prefix (lakecache has tags, not "
                f"branches): see them with `lakecache data log {dataset}`, name one with "
                f"`lakecache data tag {dataset} TAG`."
            ),
        )


def _create_engine(url: str) -> Engine:
    """An engine for ``url``, with SQLite set up for several processes at once."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise UserError(
            f"not a database URL: {url!r}",
            hint="Use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB.",
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            # SQLAlchemy's default driver is psycopg2; lakecache ships psycopg 3.
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(parsed, pool_size=PG_POOL_SIZE, max_overflow=PG_MAX_OVERFLOW)
        event.listen(engine, "checkout", _ping_if_idle)
        event.listen(engine, "checkin", _mark_checked_in)
        return engine
    if backend != "sqlite":
        raise UserError(
            f"unsupported catalog database {backend!r}",
            hint="Use sqlite:///PATH (one machine) or postgresql+psycopg://... (a team).",
        )
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        # Each pooled connection would see its own empty database.
        raise UserError(f"the catalog needs a SQLite file, not {url!r}", hint="Use sqlite:///PATH.")
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed)
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _mark_checked_in(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    record.info["checked_in"] = time.monotonic()


def _ping_if_idle(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry, proxy: Any) -> None:
    """Ping a connection that sat idle in the pool; a dead one is replaced (the pool retries
    with a fresh connection on DisconnectionError). A busy server's connections skip the
    round trip that ``pool_pre_ping`` would add to every checkout."""
    checked_in = record.info.get("checked_in")
    if checked_in is None or time.monotonic() - checked_in < PG_PING_AFTER_IDLE_S:
        return
    try:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        dbapi_conn.rollback()
    except Exception as exc:  # noqa: BLE001 - whatever a dead connection raises
        raise sa_exc.DisconnectionError(f"pooled connection is gone: {exc}") from exc


def _sqlite_connect(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's "begin" hook issue BEGIN: the sqlite3 module's own
    # transaction handling skips it for SELECT and DDL, which breaks isolation.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        # busy_timeout first: switching to WAL itself may wait for another process.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        # In WAL mode NORMAL loses no committed data on a process crash, only on power loss.
        cursor.execute("PRAGMA synchronous = NORMAL")
        # Read the file through the OS page cache instead of copying pages into
        # each connection: lookups of 600,000 digests run about twice as fast.
        cursor.execute(f"PRAGMA mmap_size = {SQLITE_MMAP_BYTES}")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock up front: a deferred transaction that reads and
    # then writes fails at once with SQLITE_BUSY if another writer got in between,
    # where BEGIN IMMEDIATE simply waits its turn (busy_timeout).
    write = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _newest_shipped_revision() -> str:
    """The newest migration shipped: revision ids are the files' number prefixes (0001, 0002...)."""
    versions = MIGRATIONS_DIR / "versions"
    return max(p.name.split("_", 1)[0] for p in versions.glob("[0-9]*_*.py"))


def _current_revision(engine: Engine) -> str | None:
    """The catalog's schema version, or None if it has none yet (or cannot be read)."""
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(f"SELECT version_num FROM {t.VERSION_TABLE}").first()
            conn.rollback()
    except (sa_exc.OperationalError, sa_exc.ProgrammingError):
        return None
    return None if row is None else str(row[0])


def _migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration, once, however many processes try at once."""
    if _current_revision(engine) == _newest_shipped_revision():
        return  # the common case, decided without importing Alembic (it costs CLI start-up)
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    url = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            # Fast path without a lock: an up-to-date catalog is the common case.
            context = MigrationContext.configure(conn, opts={"version_table": t.VERSION_TABLE})
            current = context.get_current_revision()
            conn.rollback()
            if current == head:
                return
            if current is not None and current not in {s.revision for s in script.walk_revisions()}:
                raise CatalogError(
                    f"the catalog at {url} has schema version {current}, "
                    f"newer than this lakecache knows ({head})",
                    hint="Upgrade lakecache (pip install -U lakecache) on this machine.",
                )
            conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        raise _catalog_error(url, exc) from exc
    except CommandError as exc:
        raise CatalogError(f"cannot migrate the catalog at {url}: {exc}") from exc


def _catalog_error(url: str, exc: sa_exc.DBAPIError) -> CatalogError:
    return CatalogError(
        f"catalog database {url}: {exc.orig}",
        hint="Check that the database is reachable and not full, then run again.",
    )


def _dataset_not_found(name: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"no dataset named {name!r}")


def _dataset_record(row: Any) -> DatasetRecord:
    return DatasetRecord(int(row.id), row.name, row.owner, row.description, row.created_at)


def _commit(dataset: str, row: Any, parents: tuple[str, ...]) -> Commit:
    return Commit(
        dataset=dataset,
        manifest=row.manifest,
        parents=parents,
        author=row.author,
        message=row.message,
        created_at=row.created_at,
        file_count=int(row.file_count),
        bytes=int(row.bytes),
    )


def _describe(commit_id: str | None) -> str:
    return commit_id[:12] if commit_id else "no commit"


def _timestamp(created_at: str) -> float:
    """Seconds since the epoch of an ISO-8601 time, so mixed UTC offsets sort correctly."""
    try:
        moment = datetime.fromisoformat(created_at)
    except ValueError:
        return 0.0  # not written by lakecache; sort it as the oldest

    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _now() -> datetime:
    return datetime.now(UTC)
