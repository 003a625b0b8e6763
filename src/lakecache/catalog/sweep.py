"""What lake garbage collection reads from and changes in the catalog.

The collector (:mod:`lakecache.data.gc`) marks from every commit the catalog
holds and keeps the blob index in step with the lake: blobs it is about to
delete are unpublished first (so no new commit deduplicates against them), and
blobs it moves to a new pack are re-pointed in one transaction. Reads stream,
so memory follows a batch, not the number of blobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import LargeBinary, bindparam, delete, select, text, type_coerce, update

from lakecache.catalog import tables as t
from lakecache.catalog.blobs import LOOKUP_CHUNK, _chunks

if TYPE_CHECKING:
    from lakecache.catalog.db import Catalog
    from lakecache.lake.objects import BlobLocation

#: Blob index rows fetched per round trip while streaming.
STREAM_BATCH = 20_000


def commit_manifests(catalog: Catalog) -> dict[str, str]:
    """Every commit of every dataset: commit id -> manifest digest."""
    with catalog._read() as conn:
        return dict(conn.execute(select(t.commits.c.id, t.commits.c.manifest)).all())


def kept_manifests(catalog: Catalog) -> list[str]:
    """Manifests besides commits' whose blobs the lake keeps: those of jobs' collected
    outputs (the compute tables hold them; named here by SQL so that the collector, which
    sits below compute, imports nothing of it)."""
    with catalog._read() as conn:
        rows = conn.execute(
            text(
                "SELECT DISTINCT outputs_manifest FROM compute_jobs"
                " WHERE outputs_manifest IS NOT NULL"
            )
        ).all()
    return [str(r[0]) for r in rows]


def index_rows(catalog: Catalog) -> Iterator[tuple[bytes, int, str | None]]:
    """Every blob index row as (raw 32-byte digest, size, pack id or None), streamed."""
    raw = type_coerce(t.blobs.c.digest, LargeBinary)
    query = select(raw, t.blobs.c.size, t.blobs.c.pack_id)
    with catalog._read(stream=True) as conn:
        result = conn.execution_options(yield_per=STREAM_BATCH).execute(query)
        for digest, size, pack_id in result:
            yield bytes(digest), int(size), pack_id


def unpublish(catalog: Catalog, pack_ids: Iterable[str], loose: Iterable[str]) -> None:
    """Forget packs and loose blobs in the blob index, so nothing deduplicates against them.

    One transaction. Their objects stay in the lake until a later sweep.
    """
    packs = list(pack_ids)
    digests = list(loose)
    with catalog._write() as conn:
        for chunk in _chunks(packs, LOOKUP_CHUNK):
            conn.execute(delete(t.blobs).where(t.blobs.c.pack_id.in_(chunk)))
            conn.execute(delete(t.packs).where(t.packs.c.id.in_(chunk)))
        for chunk in _chunks(digests, LOOKUP_CHUNK):
            conn.execute(
                delete(t.blobs).where(t.blobs.c.pack_id.is_(None), t.blobs.c.digest.in_(chunk))
            )


def move_blobs(
    catalog: Catalog, old_pack: str, new_pack: str, size: int, moved: Sequence[BlobLocation]
) -> None:
    """Point ``moved`` (now in ``new_pack``) there and forget ``old_pack``, in one transaction.

    Blobs left in ``old_pack`` were garbage; their rows go with it.
    """
    with catalog._write() as conn:
        conn.execute(
            catalog._insert_ignore(t.packs),
            {
                "id": new_pack,
                "size": size,
                "blob_count": len(moved),
                "created_at": datetime.now(UTC),
            },
        )
        statement = (
            update(t.blobs)
            .where(t.blobs.c.digest == bindparam("d"), t.blobs.c.pack_id == old_pack)
            .values(pack_id=new_pack, pack_offset=bindparam("o"))
        )
        if moved:
            conn.execute(statement, [{"d": loc.digest, "o": loc.offset} for loc in moved])
        conn.execute(delete(t.blobs).where(t.blobs.c.pack_id == old_pack))
        conn.execute(delete(t.packs).where(t.packs.c.id == old_pack))
