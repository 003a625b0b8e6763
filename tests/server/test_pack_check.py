"""The server's read-back of uploaded packs and large blobs, in segments read at once.

On a folder lake and on a real S3 lake (SeaweedFS). Packs here are cut into
several segments (small :data:`SEGMENT`), so a lie anywhere, in any segment,
must still be found, and a pack longer or shorter than its index refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.seaweed import drop_bucket, new_bucket

from lakecache.errors import IntegrityError, UserError
from lakecache.lake import Lake
from lakecache.lake.local import LocalLake
from lakecache.lake.objects import blob_key, hash_bytes, pack_key
from lakecache.server.routes.lake import verify
from lakecache.server.routes.lake.verify import PackChecker, segments


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lake]:
    if request.param == "local":
        yield LocalLake(tmp_path / "lake")
        return
    from lake.test_contract import make_s3_lake

    seaweed = request.getfixturevalue("seaweed")
    bucket = new_bucket(seaweed)
    s3 = make_s3_lake(seaweed, bucket)
    try:
        yield s3
    finally:
        s3.close()
        drop_bucket(seaweed, bucket)


@pytest.fixture
def checker(monkeypatch: pytest.MonkeyPatch) -> Iterator[PackChecker]:
    monkeypatch.setattr(verify, "SEGMENT", 10_000)  # a few blobs a segment
    monkeypatch.setattr(verify, "READ_CHUNK", 7_000)  # a large blob in several GETs
    c = PackChecker(threads=3)
    yield c
    c.close()


def _pack(blobs: list[bytes]) -> tuple[list[tuple[str, int, int]], bytes]:
    entries, offset = [], 0
    for b in blobs:
        entries.append((hash_bytes(b), offset, len(b)))
        offset += len(b)
    return entries, b"".join(blobs)


def test_segments_are_runs_of_whole_blobs() -> None:
    entries = [("d", 0, 4), ("d", 4, 4), ("d", 8, 9), ("d", 17, 1), ("d", 18, 30)]
    assert segments(entries, size=8) == [entries[0:2], entries[2:3], entries[3:4], entries[4:]]
    assert segments(entries, size=100) == [entries]
    assert segments([], size=8) == []


def test_a_pack_read_in_segments_passes_whole(lake: Lake, checker: PackChecker) -> None:
    entries, data = _pack([os.urandom(1000 + 37 * i) for i in range(40)])
    assert len(segments(entries, verify.SEGMENT)) > 3
    lake.put(pack_key("ab" * 32), data)
    checker.check(lake, pack_key("ab" * 32), entries)


@pytest.mark.parametrize("where", [0, 21, 39])
def test_a_lie_in_any_segment_is_found(lake: Lake, checker: PackChecker, where: int) -> None:
    blobs = [os.urandom(1000 + 37 * i) for i in range(40)]
    entries, _ = _pack(blobs)
    blobs[where] = os.urandom(len(blobs[where]))  # same size, other bytes
    key = pack_key("cd" * 32)
    lake.put(key, b"".join(blobs))
    with pytest.raises(IntegrityError, match=f"offset {entries[where][1]} "):
        checker.check(lake, key, entries)


def test_a_pack_longer_or_shorter_than_its_index_is_refused(
    lake: Lake, checker: PackChecker
) -> None:
    entries, data = _pack([os.urandom(3000) for _ in range(8)])
    assert len(segments(entries, verify.SEGMENT)) == 3
    lake.put(pack_key("01" * 32), data + b"x")
    with pytest.raises(IntegrityError, match="longer than its index"):
        checker.check(lake, pack_key("01" * 32), entries)
    for n, cut in enumerate((data[:-1], data[:3000], data[:1])):
        key = pack_key(f"{n + 2:02d}" * 32)
        lake.put(key, cut)
        with pytest.raises(IntegrityError, match="index lays out"):
            checker.check(lake, key, entries)
    with pytest.raises(UserError, match="not in the lake"):
        checker.check(lake, pack_key("ff" * 32), entries)
    # No blobs at all: the object must be empty too.
    lake.put(pack_key("fe" * 32), b"")
    checker.check(lake, pack_key("fe" * 32), [])
    with pytest.raises(IntegrityError, match="longer than its index"):
        checker.check(lake, pack_key("01" * 32), [])


def test_a_large_blob_read_ahead_hashes_in_order(lake: Lake, checker: PackChecker) -> None:
    data = os.urandom(50_000)  # eight ranged GETs of 7,000 bytes, four ahead
    key = blob_key(hash_bytes(data))
    lake.put(key, data)
    assert checker.blob_digest(lake, key) == (hash_bytes(data), len(data))
    swapped = data[7_000:14_000] + data[:7_000] + data[14_000:]
    other = blob_key("ef" * 32)
    lake.put(other, swapped)
    assert checker.blob_digest(lake, other) == (hash_bytes(swapped), len(data))
    assert hash_bytes(swapped) != hash_bytes(data)
    with pytest.raises(UserError, match="not in the lake"):
        checker.blob_digest(lake, blob_key("12" * 32))
