"""The blob index: which pack (or object of its own) holds each file's bytes.

Part of :class:`~lakecache.catalog.db.Catalog`, which inherits
:class:`BlobIndex`; transactions and dialects are the Catalog's (see
:mod:`lakecache.catalog.db` for the concurrency rules).

Cost: the blob index is the one big table (a row per distinct file ever
committed), so its digests are stored as 32 raw bytes and it is touched only in
batches. Lookups: ``IN (...)`` of :data:`LOOKUP_CHUNK` digests on SQLite,
``= ANY(:array)`` of :data:`PG_LOOKUP_CHUNK` on PostgreSQL, each one statement
compiled once. Inserts: an ``executemany`` on SQLite, one ``unnest`` statement
per :data:`INSERT_CHUNK` rows on PostgreSQL.

Grants. Through a server, knowing a digest grants nothing: ``dataset_blobs``
says which blobs each dataset may name in a commit and its readers may locate,
namely those its commits hold and those its writers uploaded for it (bytes the
server read back and hashed). Only verified locations are ever recorded through
a server, so the first location a blob gets is a good one, and it is kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import ColumnElement, LargeBinary, and_, any_, bindparam, exists, select, text

from lakecache.catalog import tables as t
from lakecache.lake.objects import BlobLocation

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.dml import Insert

#: Digests per ``IN (...)`` query on SQLite: well under every build's variable limit.
LOOKUP_CHUNK = 500
#: Digests per ``= ANY(:array)`` query on PostgreSQL: one parameter, however many.
PG_LOOKUP_CHUNK = 10_000
#: Blob rows per insert statement; bounds one statement's memory.
INSERT_CHUNK = 10_000
_T = TypeVar("_T")

# One statement for a whole chunk of a pack: arrays in, rows out. Faster than
# executemany on PostgreSQL, which still plans and executes once per row.
_PG_INSERT_PACKED_BLOBS = text(
    "INSERT INTO blobs (digest, size, pack_id, pack_offset) "
    "SELECT u.digest, u.size, :pack_id, u.pack_offset FROM unnest("
    "CAST(:digests AS bytea[]), CAST(:sizes AS bigint[]), CAST(:offsets AS bigint[])"
    ") AS u(digest, size, pack_offset) "
    "ON CONFLICT DO NOTHING"
)

_PG_GRANT_BLOBS = text(
    "INSERT INTO dataset_blobs (dataset_id, digest) "
    "SELECT :dataset_id, u.digest FROM unnest(CAST(:digests AS bytea[])) AS u(digest) "
    "ON CONFLICT DO NOTHING"
)


class BlobIndex:
    """The blob index methods of :class:`~lakecache.catalog.db.Catalog`."""

    if TYPE_CHECKING:
        # What the Catalog provides: its dialect's name and its transactions.
        _dialect: str

        def _read(self) -> AbstractContextManager[Connection]: ...
        def _write(self) -> AbstractContextManager[Connection]: ...
        def _insert_ignore(self, table: Table) -> Insert: ...

    def record_pack(
        self,
        pack_id: str,
        size: int,
        blobs: Sequence[BlobLocation],
        *,
        granted_to: Sequence[str] = (),
    ) -> None:
        """Record a pack object and the blobs inside it, in one transaction.

        Idempotent. A blob the index already knows keeps its first location
        (a crash between upload and record can leave a blob in two packs; both
        hold the same bytes; a server records only packs it has hashed). The
        blobs are granted to the datasets ``granted_to`` in the same
        transaction (see the module doc). Every location must name ``pack_id``. Ten
        thousand blobs are a few statements: one ``unnest`` insert per
        :data:`INSERT_CHUNK` on PostgreSQL, an ``executemany`` on SQLite.
        """
        for loc in blobs:
            if loc.pack_id != pack_id:
                raise ValueError(f"blob {loc.digest} is located in {loc.pack_id}, not {pack_id}")
        with self._write() as conn:
            conn.execute(
                self._insert_ignore(t.packs),
                {
                    "id": pack_id,
                    "size": size,
                    "blob_count": len(blobs),
                    "created_at": datetime.now(UTC),
                },
            )
            for chunk in _chunks(blobs, INSERT_CHUNK):
                if self._dialect == "postgresql":
                    conn.execute(
                        _PG_INSERT_PACKED_BLOBS,
                        {
                            "pack_id": pack_id,
                            "digests": [bytes.fromhex(loc.digest) for loc in chunk],
                            "sizes": [loc.size for loc in chunk],
                            "offsets": [loc.offset for loc in chunk],
                        },
                    )
                else:
                    conn.execute(self._insert_ignore(t.blobs), [_blob_row(loc) for loc in chunk])
            self._grant(conn, granted_to, (loc.digest for loc in blobs))

    def record_blob(self, loc: BlobLocation, *, granted_to: Sequence[str] = ()) -> None:
        """Record one blob stored as an object of its own; packed blobs go through record_pack.

        Idempotent; a blob already known keeps its first location. Granted to
        the datasets ``granted_to`` in the same transaction.
        """
        if loc.pack_id is not None:
            raise ValueError(f"blob {loc.digest} is in pack {loc.pack_id}: use record_pack")
        with self._write() as conn:
            conn.execute(self._insert_ignore(t.blobs), _blob_row(loc))
            self._grant(conn, granted_to, [loc.digest])

    # -- grants: which blobs a dataset may name --------------------------------------------------

    def grant_blobs(
        self, datasets: Sequence[str], digests: Iterable[str], *, commit_id: str | None = None
    ) -> None:
        """Let ``datasets`` name ``digests`` (idempotent); with ``commit_id``, also note that
        commit's blobs as folded in (see :meth:`commits_to_grant`). One transaction."""
        with self._write() as conn:
            self._grant(conn, datasets, digests)
            if commit_id is not None:
                conn.execute(self._insert_ignore(t.dataset_blob_commits), {"commit_id": commit_id})

    def _grant(self, conn: Connection, datasets: Sequence[str], digests: Iterable[str]) -> None:
        if not datasets:
            return
        ids = _dataset_ids(conn, datasets)
        if not ids:
            return
        for chunk in _chunks(dict.fromkeys(digests), INSERT_CHUNK):
            for dataset_id in ids:
                if self._dialect == "postgresql":
                    conn.execute(
                        _PG_GRANT_BLOBS,
                        {"dataset_id": dataset_id, "digests": [bytes.fromhex(d) for d in chunk]},
                    )
                else:
                    conn.execute(
                        self._insert_ignore(t.dataset_blobs),
                        [{"dataset_id": dataset_id, "digest": d} for d in chunk],
                    )

    def commits_to_grant(self, datasets: Sequence[str]) -> list[tuple[str, str, str]]:
        """(dataset, commit id, manifest) of the commits of ``datasets`` whose blobs are not
        granted yet: commits made without a server. Oldest first."""
        c, d, g = t.commits, t.datasets, t.dataset_blob_commits
        query = (
            select(d.c.name, c.c.id, c.c.manifest)
            .join(d, d.c.id == c.c.dataset_id)
            .where(d.c.name.in_(list(datasets)))
            .where(~exists().where(g.c.commit_id == c.c.id))
            .order_by(c.c.seq)
        )
        with self._read() as conn:
            return [(name, cid, manifest) for name, cid, manifest in conn.execute(query)]

    def granted_blobs(self, datasets: Sequence[str], digests: Iterable[str]) -> set[str]:
        """The subset of ``digests`` that the index holds and one of ``datasets`` may name."""
        return {digest for (digest,) in self._granted_rows(datasets, digests, t.blobs.c.digest)}

    def locate_granted(
        self, datasets: Sequence[str], digests: Iterable[str]
    ) -> dict[str, BlobLocation]:
        """:meth:`locate_blobs`, for the digests one of ``datasets`` may name only."""
        columns = (t.blobs.c.digest, t.blobs.c.size, t.blobs.c.pack_id, t.blobs.c.pack_offset)
        return {
            digest: BlobLocation(digest, size, pack_id, offset)
            for digest, size, pack_id, offset in self._granted_rows(datasets, digests, *columns)
        }

    def _granted_rows(
        self, datasets: Sequence[str], digests: Iterable[str], *columns: ColumnElement[Any]
    ) -> Iterator[Any]:
        with self._read() as conn:
            ids = _dataset_ids(conn, datasets)
        if not ids:
            return iter(())
        g = t.dataset_blobs
        granted = exists().where(and_(g.c.digest == t.blobs.c.digest, g.c.dataset_id.in_(ids)))
        return self._blob_rows(digests, *columns, where=granted)

    def pack_sizes(self, pack_ids: Iterable[str]) -> dict[str, int]:
        """The recorded size of each of ``pack_ids`` (unknown ones are absent)."""
        out: dict[str, int] = {}
        with self._read() as conn:
            for chunk in _chunks(pack_ids, LOOKUP_CHUNK):
                rows = conn.execute(
                    select(t.packs.c.id, t.packs.c.size).where(t.packs.c.id.in_(chunk))
                )
                out.update((pid, int(size)) for pid, size in rows)
        return out

    def known_blobs(self, digests: Iterable[str]) -> set[str]:
        """Return the subset of ``digests`` that the index holds. Batched; see locate_blobs."""
        return {digest for (digest,) in self._blob_rows(digests, t.blobs.c.digest)}

    def locate_blobs(self, digests: Iterable[str]) -> dict[str, BlobLocation]:
        """Where each known digest's bytes are. Unknown digests are absent from the result.

        One query per batch: ``= ANY(array)`` of :data:`PG_LOOKUP_CHUNK` digests
        on PostgreSQL, ``IN (...)`` of :data:`LOOKUP_CHUNK` on SQLite. The
        digests are consumed lazily, so a generator over a huge listing is fine.
        """
        # Rows unpacked as tuples: attribute access on SQLAlchemy rows costs more
        # than the query itself at this volume.
        columns = (t.blobs.c.digest, t.blobs.c.size, t.blobs.c.pack_id, t.blobs.c.pack_offset)
        return {
            digest: BlobLocation(digest, size, pack_id, offset)
            for digest, size, pack_id, offset in self._blob_rows(digests, *columns)
        }

    def _blob_rows(
        self,
        digests: Iterable[str],
        *columns: ColumnElement[Any],
        where: ColumnElement[bool] | None = None,
    ) -> Iterator[Any]:
        """``columns`` of the blob index rows for ``digests``, one query per batch.

        The statement is built once with a single list parameter, so SQLAlchemy
        compiles it once instead of coercing every digest into an expression.
        """
        if self._dialect == "postgresql":
            from sqlalchemy.dialects import postgresql  # not loaded for a SQLite catalog

            param = bindparam("digests", type_=postgresql.ARRAY(LargeBinary))
            query = select(*columns).where(t.blobs.c.digest == any_(param))
            batches: Iterator[list[Any]] = (
                [bytes.fromhex(d) for d in chunk] for chunk in _chunks(digests, PG_LOOKUP_CHUNK)
            )
        else:
            param = bindparam("digests", expanding=True)
            query = select(*columns).where(t.blobs.c.digest.in_(param))
            batches = _chunks(digests, LOOKUP_CHUNK)
        if where is not None:
            query = query.where(where)
        with self._read() as conn:
            for batch in batches:
                yield from conn.execute(query, {"digests": batch}).all()


def _blob_row(loc: BlobLocation) -> dict[str, Any]:
    return {
        "digest": loc.digest,
        "size": loc.size,
        "pack_id": loc.pack_id,
        "pack_offset": loc.offset,
    }


def _dataset_ids(conn: Connection, names: Sequence[str]) -> list[int]:
    rows = conn.execute(select(t.datasets.c.id).where(t.datasets.c.name.in_(list(names))))
    return [int(i) for (i,) in rows]


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
