"""Streaming from the lake starts with small GETs that grow (the first files come sooner),
and every file still arrives whole and verified."""

from __future__ import annotations

import pytest

from integrations.test_reader import count_gets
from integrations.world import Lake
from lakecache.data.materialize import Range
from lakecache.integrations import reader as reader_module
from lakecache.integrations.reader import CommitReader, _ramped


def blobs_of(ranges: list[Range]) -> list[tuple[str, int, int]]:
    """(digest, offset in the object, length) of every blob the ranges hold."""
    return [(d, r.start + off, n) for r in ranges for d, off, n in r.blobs]


def test_a_merged_range_is_cut_into_doubling_gets_at_blob_boundaries() -> None:
    # Ten blobs of 100 bytes with gaps of 10: offsets 1000, 1110, 1220, ...
    blobs = tuple((f"d{i}", i * 110, 100) for i in range(10))
    whole = Range("packs/p", 1000, 9 * 110 + 100, blobs)
    ramp = [100]
    pieces = list(_ramped(whole, ramp))
    assert blobs_of(pieces) == blobs_of([whole])
    # 100 bytes (1 blob), then 200 (1: two would span 210), 400 (3), 800 (the rest).
    assert [len(p.blobs) for p in pieces] == [1, 1, 3, 5]
    for p in pieces:
        assert p.blobs[0][1] == 0  # each GET starts at its first blob
        assert p.length == p.blobs[-1][1] + p.blobs[-1][2]
    assert pieces[-1].start + pieces[-1].length == whole.start + whole.length
    assert ramp == [800]  # still below RAMP_LAST_BYTES: the next range is cut too


def test_the_ramp_ends_once_it_reaches_its_last_size() -> None:
    blobs = tuple((f"d{i}", i * 100, 100) for i in range(4))
    ramp = [reader_module.RAMP_LAST_BYTES]
    assert list(_ramped(Range("k", 0, 400, blobs), ramp)) == [Range("k", 0, 400, blobs)]
    assert ramp == [0]
    big = tuple((f"e{i}", i * (1 << 20), 1 << 20) for i in range(20))
    assert list(_ramped(Range("k", 0, 20 << 20, big), ramp)) == [Range("k", 0, 20 << 20, big)]


def test_a_single_blob_is_never_cut() -> None:
    r = Range("k", 5, 1000, (("d", 0, 1000),))
    ramp = [10]
    assert list(_ramped(r, ramp)) == [r]


def test_streaming_with_a_small_ramp_reads_every_file_whole(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "RAMP_FIRST_BYTES", 64)
    with CommitReader("xray@v1", hub=lake.hub) as reader:
        gets = count_gets(reader, monkeypatch)
        got = {e.path: data for e, data in reader.read_many(reader.entries())}
        assert got == lake.files
        # The files share a pack: without the ramp they came in one or two GETs.
        assert len(gets) > 3, gets
        assert reader.counters.files == len(lake.files)
