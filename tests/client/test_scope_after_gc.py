"""Reads through the server after lake garbage collection moved blobs.

The server keeps each commit's scope (the lake keys it may read) on disk and in
memory. Garbage collection rewrites a mostly-garbage pack into a new one and
re-points the blob index there; it also puts back blobs the index had lost.
Both leave scopes behind, and the server must notice the first time a read
misses. Each test runs on a folder lake and on SeaweedFS, with a lake of its
own module (a collection with no grace period touches the whole lake).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from client.world import LakeWorld
from lakecache.catalog import sweep as index
from lakecache.data import gc
from lakecache.data.dataset import Dataset
from lakecache.lake.objects import (
    BlobLocation,
    Commit,
    ManifestEntry,
    commit_key,
    decode_pack_index,
    encode_manifest,
    hash_bytes,
    manifest_key,
    pack_index_key,
    pack_key,
)

LAKE = "/api/v1/lake"


def _write(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _pulled(lw: LakeWorld, who: str, dataset: str, ref: str, home: Path) -> dict[str, bytes]:
    """Every file of ``dataset@ref`` as a fresh client of ``who`` pulls it through the server."""
    hub = lw.hub(who, home / "client")
    try:
        Dataset(dataset, hub=hub).pull(ref, home / "out")
    finally:
        hub.close()
    out = home / "out"
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def test_an_older_commit_reads_whole_after_gc_rewrote_its_pack(
    lake_world: LakeWorld, tmp_path: Path
) -> None:
    """Fails on the old code: the scope of keep@v1 named the rewritten pack, so the new pack
    was refused (403) and the old one was gone."""
    plane = lake_world.world.plane
    catalog = plane.hub.catalog
    tag = os.urandom(2).hex()
    scratch, keep = f"scratch{tag}", f"keep{tag}"
    for name in (scratch, keep):
        plane.accounts.create_owned_dataset(name, "wendy", now=plane.clock.now())
    live = os.urandom(1000)
    garbage = {f"g{i}.bin": os.urandom(20_000) for i in range(4)}
    v1_files = {"live.bin": live, "own.bin": os.urandom(3000)}
    v2_files = {"new.bin": os.urandom(2000)}

    hub = lake_world.hub("wendy", tmp_path / "writer")
    try:
        # One pack of scratch's files; keep@v1 deduplicates live.bin against it.
        Dataset(scratch, hub=hub).commit(_write(tmp_path / "s", {"live.bin": live, **garbage}))
        kept = Dataset(keep, hub=hub)
        v1 = kept.commit(_write(tmp_path / "v1", v1_files), "v1").id
        kept.commit(_write(tmp_path / "v2", v2_files), "v2")
    finally:
        hub.close()
    (old_pack,) = {loc.pack_id for loc in catalog.locate_blobs([hash_bytes(live)]).values()}
    assert old_pack is not None
    # Read once before the collection: the scopes are worked out, on disk and in memory.
    assert _pulled(lake_world, "wendy", keep, v1, tmp_path / "before") == v1_files

    plane.accounts.delete_dataset(scratch)
    result = gc.collect(plane.hub.lake, catalog, grace=timedelta(0))
    assert result.repacked >= 1
    (loc,) = catalog.locate_blobs([hash_bytes(live)]).values()
    assert loc.pack_id is not None and loc.pack_id != old_pack
    assert not plane.hub.lake.exists([pack_key(old_pack)])  # grace 0: gone

    assert _pulled(lake_world, "wendy", keep, v1, tmp_path / "after") == v1_files
    assert _pulled(lake_world, "wendy", keep, "latest", tmp_path / "latest") == v2_files
    # The scopes worked out again widen nothing: olga's dataset still may not read it.
    r = lake_world.call("olga", "GET", f"{LAKE}/objects/{pack_key(loc.pack_id)}?dataset=other")
    assert r.status_code == 403


def test_a_commit_that_named_blobs_the_index_had_lost_reads_once_they_are_back(
    lake_world: LakeWorld, tmp_path: Path
) -> None:
    """The race gc's module doc describes: a commit (made with the lake's credentials) that
    learned of blobs before a collection condemned their pack lands after it; a read through
    the server works out its scope then, without the pack. The next collection puts the pack
    back, as a live commit reaches it. Fails on the old code: the pack stayed refused (403)."""
    plane = lake_world.world.plane
    catalog = plane.hub.catalog
    tag = os.urandom(2).hex()
    first, second = f"first{tag}", f"second{tag}"
    for name in (first, second):
        plane.accounts.create_owned_dataset(name, "wendy", now=plane.clock.now())
    files = {f"f{i}.bin": os.urandom(3000) for i in range(3)}
    hub = lake_world.hub("wendy", tmp_path / "writer")
    try:
        Dataset(first, hub=hub).commit(_write(tmp_path / "src", files), "first")
    finally:
        hub.close()
    digests = {name: hash_bytes(data) for name, data in files.items()}
    (pack_id,) = {loc.pack_id for loc in catalog.locate_blobs(digests.values()).values()}
    assert pack_id is not None
    index.unpublish(catalog, [pack_id], [])  # as a collection that condemned it

    entries = [ManifestEntry(n, digests[n], len(files[n])) for n in sorted(files)]
    manifest = encode_manifest(entries)
    commit = Commit(
        second,
        hash_bytes(manifest),
        (),
        "wendy",
        "late",
        datetime.now(UTC).isoformat(timespec="microseconds"),
        len(entries),
        sum(e.size for e in entries),
    )
    plane.hub.lake.put(manifest_key(commit.manifest), manifest)
    plane.hub.lake.put(commit_key(commit.id), commit.to_json())
    catalog.add_commit(commit, expected_head=None)
    # A read now: the server works out the commit's scope while the pack is unindexed.
    body = {"datasets": [second], "items": [{"method": "GET", "key": pack_key(pack_id)}]}
    assert lake_world.call("wendy", "POST", f"{LAKE}/presign", json=body).status_code == 403

    # What gc's sweep does for blobs a live commit reaches that the index lost.
    pack = decode_pack_index(plane.hub.lake.get(pack_index_key(pack_id)))
    size = sum(n for _, _, n in pack)
    catalog.record_pack(pack_id, size, [BlobLocation(d, n, pack_id, o) for d, o, n in pack])
    assert _pulled(lake_world, "wendy", second, commit.id, tmp_path / "pulled") == files
