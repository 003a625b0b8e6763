"""Lake garbage collection: the plan (pure), and sweeps on a folder lake and real SeaweedFS S3."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lakecache.catalog.accounts import Accounts
from lakecache.data import gc
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.lake import ObjectInfo
from lakecache.lake.objects import (
    Commit,
    ManifestEntry,
    commit_key,
    encode_manifest,
    hash_bytes,
    manifest_key,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
P = "a" * 32  # pack ids in the pure tests


def _info(key: str, size: int, age: timedelta) -> ObjectInfo:
    return ObjectInfo(key, size, NOW - age)


def _marks(**overrides: object) -> gc.Marks:
    base: dict[str, object] = {
        "live_commits": frozenset({"c1"}),
        "live_manifests": frozenset({"m1"}),
        "dead_refs": frozenset({"refs/gone/1.json"}),
        "packs": {},
        "live_loose": frozenset(),
    }
    base.update(overrides)
    return gc.Marks(**base)  # type: ignore[arg-type]


# -- the plan: a pure function -------------------------------------------------------------------


def test_plan_condemns_an_unreachable_pack_before_deleting_it() -> None:
    objects = [_info(f"packs/{P}.pack", 1000, 2 * DAY), _info(f"packs/{P}.idx", 10, 2 * DAY)]
    first = gc.plan_gc(objects, _marks(), condemned={}, now=NOW, grace=DAY)
    assert first.delete == ()
    assert first.condemn == (f"packs/{P}.pack",)
    assert first.condemned == {f"packs/{P}.pack": NOW}
    assert first.waiting == (1, 1010)

    later = NOW + DAY
    second = gc.plan_gc(objects, _marks(), condemned=first.condemned, now=later, grace=DAY)
    # The index goes before the data, so a half-done sweep leaves no index without its pack.
    assert [o.key for o in second.delete] == [f"packs/{P}.idx", f"packs/{P}.pack"]
    assert second.bytes_freed == 1010
    assert second.by_kind()["pack"] == (2, 1010)
    assert second.condemned == {}


def test_plan_never_touches_young_or_live_objects_and_frees_dead_history() -> None:
    live_pack, young_pack = "b" * 32, "c" * 32
    objects = [
        _info(f"packs/{live_pack}.pack", 100, 3 * DAY),
        _info(f"packs/{young_pack}.pack", 50, timedelta(hours=1)),
        _info("manifests/m1", 7, 3 * DAY),
        _info("manifests/m2", 8, 3 * DAY),
        _info("commits/c1.json", 3, 3 * DAY),
        _info("commits/c2.json", 4, 3 * DAY),
        _info("refs/gone/1.json", 5, 3 * DAY),
        _info("refs/kept/1.json", 6, 3 * DAY),
        _info("gc/condemned/1.json", 9, 3 * DAY),
        _info("something/else", 9, 3 * DAY),
    ]
    marks = _marks(packs={live_pack: gc.PackUsage(3, 3, 90)})
    plan = gc.plan_gc(objects, marks, condemned={}, now=NOW, grace=DAY)
    assert {o.key for o in plan.delete} == {"manifests/m2", "commits/c2.json", "refs/gone/1.json"}
    assert plan.young == (1, 50)
    assert plan.repack == ()
    assert plan.condemn == ()


def test_plan_rewrites_a_mostly_garbage_pack_and_condemns_its_old_copy() -> None:
    objects = [_info(f"packs/{P}.pack", 1000, 2 * DAY), _info(f"packs/{P}.idx", 10, 2 * DAY)]
    marks = _marks(packs={P: gc.PackUsage(10, 1, 100)})
    plan = gc.plan_gc(objects, marks, condemned={}, now=NOW, grace=DAY)
    assert plan.repack == (gc.Repack(P, 1010, 1, 100),)
    assert plan.condemned == {f"packs/{P}.pack": NOW}
    assert plan.delete == ()
    half_live = _marks(packs={P: gc.PackUsage(10, 6, 600)})
    assert gc.plan_gc(objects, half_live, condemned={}, now=NOW, grace=DAY).repack == ()


def test_plan_resurrects_a_condemned_pack_that_a_commit_reaches_again() -> None:
    objects = [_info(f"packs/{P}.pack", 1000, 5 * DAY)]
    from lakecache.lake.objects import BlobLocation

    marks = _marks(resurrect=(BlobLocation("d" * 64, 10, P, 0),))
    plan = gc.plan_gc(
        objects, marks, condemned={f"packs/{P}.pack": NOW - 3 * DAY}, now=NOW, grace=DAY
    )
    assert plan.delete == ()
    assert plan.condemned == {}


def test_plan_refuses_nothing_with_zero_grace_it_deletes_at_once() -> None:
    objects = [_info(f"packs/{P}.pack", 1000, timedelta(0))]
    plan = gc.plan_gc(objects, _marks(), condemned={}, now=NOW, grace=timedelta(0))
    assert [o.key for o in plan.delete] == [f"packs/{P}.pack"]


# -- sweeps on real lakes --------------------------------------------------------------------------


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def _lake_keys(hub: Hub) -> dict[str, int]:
    return {o.key: o.size for o in hub.lake.list()}


def _pull_all(ds: Dataset, dest: Path) -> int:
    """Pull every commit of ``ds`` (each file checked against its digest); files pulled."""
    n = 0
    for i, entry in enumerate(ds.log()):
        n += ds.pull(entry.id, dest / str(i)).files
    return n


def test_deleting_a_dataset_then_gc_reclaims_only_its_own_bytes(hub: Hub, tmp_path: Path) -> None:
    shared = os.urandom(3000)
    keep = Dataset.create("keep", hub=hub)
    keep.commit(_write(tmp_path / "k", {"shared.bin": shared, "k.bin": os.urandom(2000)}))
    gone = Dataset.create("gone", hub=hub)
    own = {f"g{i}.bin": os.urandom(5000) for i in range(5)}
    gone.commit(_write(tmp_path / "g", {"shared.bin": shared, **own}))
    gone.tag("v1")
    Accounts(hub.catalog).delete_dataset("gone")
    assert any(k.startswith("refs/gone/") for k in _lake_keys(hub))  # with its tombstone
    before = _lake_keys(hub)

    dry = gc.collect(hub.lake, hub.catalog, grace=timedelta(0), dry_run=True)
    assert _lake_keys(hub) == before  # a dry run changes nothing
    by_kind = dry.plan.by_kind()
    assert by_kind["commit"][0] == 1 and by_kind["manifest"][0] == 1
    assert by_kind["pack"][1] >= sum(len(d) for d in own.values())
    assert by_kind["ref"][0] >= 3  # dataset, commit, tag records and the tombstone

    done = gc.collect(hub.lake, hub.catalog, grace=timedelta(0))
    after = _lake_keys(hub)
    assert done.deleted == len(dry.plan.delete)
    assert done.bytes_freed == dry.plan.bytes_freed
    assert sum(before.values()) - sum(after.values()) >= sum(len(d) for d in own.values())
    assert not any(k.startswith("refs/gone/") for k in after)
    assert hub.catalog.known_blobs([hash_bytes(d) for d in own.values()]) == set()
    assert hub.catalog.known_blobs([hash_bytes(shared)]) == {hash_bytes(shared)}
    assert _pull_all(keep, tmp_path / "out") == 2
    # Nothing left to collect.
    again = gc.collect(hub.lake, hub.catalog, grace=timedelta(0))
    assert again.deleted == 0


def test_a_mostly_garbage_pack_is_rewritten_and_its_live_blobs_stay_readable(
    hub: Hub, tmp_path: Path
) -> None:
    # One commit of two datasets' files makes one pack; deleting the big one leaves it
    # mostly garbage.
    live = os.urandom(1000)
    garbage = {f"x{i}.bin": os.urandom(20_000) for i in range(4)}
    a = Dataset.create("a", hub=hub)
    a.commit(_write(tmp_path / "all", {"live.bin": live, **garbage}))
    b = Dataset.create("b", hub=hub)
    b.commit(_write(tmp_path / "b", {"live.bin": live}))
    Accounts(hub.catalog).delete_dataset("a")
    (old_pack,) = {loc.pack_id for loc in hub.catalog.locate_blobs([hash_bytes(live)]).values()}

    result = gc.collect(hub.lake, hub.catalog, grace=timedelta(0))
    assert result.repacked == 1
    (loc,) = hub.catalog.locate_blobs([hash_bytes(live)]).values()
    assert loc.pack_id != old_pack
    assert f"packs/{old_pack}.pack" not in _lake_keys(hub)  # grace 0: the old copy goes now
    assert _pull_all(b, tmp_path / "out") == 1


def test_a_pack_of_tiny_live_files_is_never_deleted_by_a_zero_grace_gc(
    hub: Hub, tmp_path: Path
) -> None:
    """Its index outweighs its bytes, so it looks mostly garbage; every blob is live."""
    ds = Dataset.create("tiny", hub=hub)
    ds.commit(_write(tmp_path / "t", {"a.txt": b"ok", "b.txt": b"yes"}))
    packs = [k for k in _lake_keys(hub) if k.endswith(".pack")]
    assert len(packs) == 1

    result = gc.collect(hub.lake, hub.catalog, grace=timedelta(0))
    assert result.repacked == 0
    assert packs[0] in _lake_keys(hub)
    assert _pull_all(ds, tmp_path / "out") == 2
    # The next run finds it live again, and still leaves it.
    gc.collect(hub.lake, hub.catalog, grace=timedelta(0))
    assert _pull_all(ds, tmp_path / "out2") == 2


def test_a_commit_that_deduplicated_before_the_condemnation_keeps_its_blobs(
    hub: Hub, tmp_path: Path
) -> None:
    """The race of a gc and a commit that reuses an old pack the gc is about to delete."""
    grace = timedelta(seconds=1.5)
    files = {f"f{i}.bin": os.urandom(4000) for i in range(3)}
    old = Dataset.create("old", hub=hub)
    old.commit(_write(tmp_path / "old", files))
    Accounts(hub.catalog).delete_dataset("old")
    Dataset.create("new", hub=hub)
    entries = sorted(
        (ManifestEntry(n, hash_bytes(d), len(d)) for n, d in files.items()), key=lambda e: e.path
    )
    # An in-flight commit of "new" asks the index now: every blob is there, nothing uploads.
    assert hub.catalog.known_blobs(e.digest for e in entries) == {e.digest for e in entries}
    time.sleep(grace.total_seconds() + 0.2)

    first = gc.collect(hub.lake, hub.catalog, grace=grace)
    assert first.plan.condemn  # the old packs are condemned, not deleted
    # old's commit object, manifest and ref log go; its packs wait out their condemnation.
    assert {o.kind for o in first.plan.delete} == {"commit", "manifest", "ref"}
    assert hub.catalog.known_blobs(e.digest for e in entries) == set()

    # The in-flight commit lands, naming the blobs it found a moment ago.
    manifest = encode_manifest(entries)
    hub.lake.put(manifest_key(hash_bytes(manifest)), manifest)
    commit = Commit(
        "new",
        hash_bytes(manifest),
        (),
        "tester",
        "late",
        datetime.now(UTC).isoformat(),
        3,
        sum(e.size for e in entries),
    )
    hub.lake.put(commit_key(commit.id), commit.to_json())
    hub.catalog.add_commit(commit, expected_head=None)
    time.sleep(grace.total_seconds() + 0.2)

    second = gc.collect(hub.lake, hub.catalog, grace=grace)
    assert second.resurrected == len(entries)
    assert not any(o.kind == "pack" for o in second.plan.delete)
    assert hub.catalog.known_blobs(e.digest for e in entries) == {e.digest for e in entries}
    assert _pull_all(Dataset("new", hub=hub), tmp_path / "out") == 3


@pytest.mark.s3
def test_gc_while_commits_run_on_s3_loses_nothing(s3_settings: object, tmp_path: Path) -> None:
    """Real concurrent commits on SeaweedFS while collections run, some reusing the bytes
    of a deleted dataset; afterwards every commit of every dataset pulls whole."""
    hub = Hub(s3_settings)  # type: ignore[arg-type]
    try:
        grace = timedelta(seconds=1)
        reused = {f"r{i}.bin": os.urandom(3000) for i in range(4)}
        gone = Dataset.create("gone", hub=hub)
        gone.commit(_write(tmp_path / "gone", reused))
        Accounts(hub.catalog).delete_dataset("gone")
        time.sleep(1.2)
        busy = Dataset.create("busy", hub=hub)
        errors: list[BaseException] = []
        stop = threading.Event()

        def commit_loop() -> None:
            try:
                i = 0
                while not stop.is_set() or i < 3:
                    folder = _write(
                        tmp_path / f"busy{i}",
                        {**reused, f"new{i}.bin": os.urandom(2000)},
                    )
                    busy.commit(folder, f"round {i}")
                    i += 1
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                errors.append(exc)

        worker = threading.Thread(target=commit_loop)
        worker.start()
        results = []
        for _ in range(4):
            results.append(gc.collect(hub.lake, hub.catalog, grace=grace))
            time.sleep(0.7)
        stop.set()
        worker.join(timeout=120)
        assert not errors, errors
        results.append(gc.collect(hub.lake, hub.catalog, grace=grace))
        assert sum(r.deleted for r in results) > 0  # the deleted dataset's history went
        assert len(busy.log()) >= 3
        assert _pull_all(busy, tmp_path / "out") == 5 * len(busy.log())
    finally:
        hub.close()
