"""The blob index: which lake object holds each blob, recorded and looked up in bulk."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from lakecache.catalog import Catalog
from lakecache.lake.objects import BlobLocation, hash_bytes, new_pack_id


def digests(n: int, salt: str = "") -> list[str]:
    return [hash_bytes(f"{salt}{i}".encode()) for i in range(n)]


def packed(pack_id: str, ds: list[str]) -> list[BlobLocation]:
    return [BlobLocation(d, 10 + i, pack_id, i * 100) for i, d in enumerate(ds)]


def test_record_pack_then_know_and_locate(catalog: Catalog) -> None:
    pack = new_pack_id()
    locs = packed(pack, digests(50))
    catalog.record_pack(pack, 5000, locs)
    unknown = digests(10, salt="unknown")

    assert catalog.known_blobs([*digests(50), *unknown]) == set(digests(50))
    located = catalog.locate_blobs(iter([*digests(50), *unknown]))
    assert located == {loc.digest: loc for loc in locs}
    assert located[locs[7].digest].key == f"packs/{pack}.pack"


def test_record_pack_is_idempotent_and_first_location_wins(catalog: Catalog) -> None:
    first, second = new_pack_id(), new_pack_id()
    shared = digests(20)
    catalog.record_pack(first, 2000, packed(first, shared))
    catalog.record_pack(first, 2000, packed(first, shared))
    # After a crash the same blobs may be uploaded again in another pack.
    catalog.record_pack(second, 3000, packed(second, [*shared, *digests(10, salt="new")]))

    located = catalog.locate_blobs([*shared, *digests(10, salt="new")])
    assert {located[d].pack_id for d in shared} == {first}
    assert {located[d].pack_id for d in digests(10, salt="new")} == {second}
    assert len(located) == 30


def test_record_blob_alone_is_idempotent(catalog: Catalog) -> None:
    big = BlobLocation(hash_bytes(b"large"), 5 << 30)
    catalog.record_blob(big)
    catalog.record_blob(big)
    located = catalog.locate_blobs([big.digest])
    assert located == {big.digest: big}
    assert located[big.digest].pack_id is None
    assert located[big.digest].size == 5 << 30  # needs BIGINT
    assert located[big.digest].key.startswith("blobs/")


def test_locations_must_name_the_pack(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="not"):
        catalog.record_pack("p1", 10, [BlobLocation(hash_bytes(b"x"), 1, "p2", 0)])
    assert catalog.known_blobs([hash_bytes(b"x")]) == set()


def test_empty_inputs(catalog: Catalog) -> None:
    catalog.record_pack("empty", 0, [])
    assert catalog.known_blobs([]) == set()
    assert catalog.locate_blobs([]) == {}


def test_twenty_thousand_blobs_in_one_pack_and_batched_lookups(catalog: Catalog) -> None:
    pack = new_pack_id()
    ds = digests(20_000)
    catalog.record_pack(pack, 20_000 * 100, packed(pack, ds))

    asked = [*ds, *digests(20_000, salt="missing")]
    known = catalog.known_blobs(asked)
    located = catalog.locate_blobs(ds[::7])

    assert known == set(ds)
    assert len(located) == len(ds[::7])
    assert all(loc.pack_id == pack for loc in located.values())


def test_record_blob_refuses_packed_locations(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="record_pack"):
        catalog.record_blob(BlobLocation(hash_bytes(b"x"), 1, "somepack", 0))
    assert catalog.known_blobs([hash_bytes(b"x")]) == set()


def test_a_digest_twice_in_one_pack_is_recorded_once(catalog: Catalog) -> None:
    digest = hash_bytes(b"twice")
    catalog.record_pack(
        "p", 20, [BlobLocation(digest, 10, "p", 0), BlobLocation(digest, 10, "p", 10)]
    )
    assert catalog.locate_blobs([digest]) == {digest: BlobLocation(digest, 10, "p", 0)}


def test_one_catalog_shared_by_many_threads(catalog: Catalog) -> None:
    def work(n: int) -> set[str]:
        pack = f"pack{n}"
        ds = digests(200, salt=pack)
        catalog.record_pack(pack, 1, packed(pack, ds))
        return catalog.known_blobs(ds)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(16)))
    assert [len(r) for r in results] == [200] * 16
    assert len(catalog.known_blobs(digests(200, salt="pack3"))) == 200


def _commit_of(catalog: Catalog, dataset: str, manifest: str) -> str:
    from datetime import UTC, datetime

    from lakecache.lake.objects import Commit

    c = Commit(dataset, manifest, (), "t", "m", datetime.now(UTC).isoformat(), 1, 1)
    return catalog.add_commit(c, expected_head=None)


def test_a_dataset_may_name_only_the_blobs_granted_to_it(catalog: Catalog) -> None:
    catalog.create_dataset("mine", "ann")
    catalog.create_dataset("theirs", "bob")
    pack = new_pack_id()
    ds = digests(30, salt="granted")
    catalog.record_pack(pack, 3000, packed(pack, ds), granted_to=["theirs"])
    # Recorded (the lake holds them), but "mine" was granted none of them.
    assert catalog.known_blobs(ds) == set(ds)
    assert catalog.granted_blobs(["theirs"], ds) == set(ds)
    assert catalog.granted_blobs(["mine"], ds) == set()
    assert catalog.locate_granted(["mine"], ds) == {}
    assert catalog.locate_granted(["mine", "theirs"], ds[:3]) == {
        loc.digest: loc for loc in packed(pack, ds)[:3]
    }
    # A grant of blobs nobody recorded makes nothing known.
    ghost = digests(1, salt="ghost")
    catalog.grant_blobs(["mine"], [*ds[:5], *ghost])
    catalog.grant_blobs(["mine"], ds[:5])  # idempotent
    assert catalog.granted_blobs(["mine"], [*ds, *ghost]) == set(ds[:5])
    big = BlobLocation(hash_bytes(b"alone"), 7)
    catalog.record_blob(big, granted_to=["mine"])
    assert catalog.granted_blobs(["mine"], [big.digest]) == {big.digest}
    assert catalog.granted_blobs(["theirs", "nobody"], [big.digest]) == set()


def test_commits_made_without_grants_are_listed_until_folded_in(catalog: Catalog) -> None:
    catalog.create_dataset("direct", "ann")
    first = _commit_of(catalog, "direct", digests(1, salt="m1")[0])
    assert [c for _, c, _ in catalog.commits_to_grant(["direct"])] == [first]
    catalog.grant_blobs(["direct"], digests(3, salt="d"), commit_id=first)
    assert catalog.commits_to_grant(["direct"]) == []
    assert catalog.commits_to_grant(["nobody"]) == []
