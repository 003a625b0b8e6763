"""The read engine behind lakecache.torch and lakecache://: cache hits under a lease,
verified streaming from the lake with merged ranged GETs, and what it tells tracking."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from integrations.world import Lake, add_cache
from lakecache.cache.service import CacheService
from lakecache.errors import IntegrityError, NotFoundError
from lakecache.integrations.reader import CommitReader
from lakecache.integrations.reads import ReadRecord, subscribe
from lakecache.lake.objects import pack_key


def count_gets(reader: CommitReader, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record every (ranged) GET the reader's lake makes (a spy: the real GET still runs)."""
    calls: list[tuple[str, int]] = []
    lake = reader.hub.lake
    real_get = lake.get

    def get(key: str, start: int = 0, length: int | None = None) -> bytes:
        calls.append((key, start))
        return real_get(key, start, length)

    monkeypatch.setattr(lake, "get", get)
    real_get_into = getattr(lake, "get_into", None)
    if real_get_into is not None:  # streamed ranges are read into a reused buffer

        def get_into(key: str, start: int, buf: memoryview) -> None:
            calls.append((key, start))
            real_get_into(key, start, buf)

        monkeypatch.setattr(lake, "get_into", get_into)
    return calls


def test_stream_reads_every_file_verified_in_few_gets(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    with CommitReader("xray@v1", hub=lake.hub) as reader:
        assert reader.source == "stream" and reader.cache is None
        gets = count_gets(reader, monkeypatch)
        got = {e.path: data for e, data in reader.read_many(reader.entries())}
        assert got == lake.files
        # 27 small files share one pack: neighbours merge into one ranged GET.
        assert 1 <= len(gets) <= 2, gets
        assert reader.counters.files == len(lake.files)
        assert reader.counters.bytes == sum(map(len, lake.files.values()))


def test_read_many_keeps_the_order_given(lake: Lake) -> None:
    with CommitReader("xray@v1", hub=lake.hub) as reader:
        backwards = sorted(reader.entries(), key=lambda e: e.path, reverse=True)
        assert [e.path for e, _ in reader.read_many(backwards)] == [e.path for e in backwards]


def test_ranges_of_one_file_fetch_its_blob_once(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    with CommitReader("xray@v1", hub=lake.hub, cached=False) as reader:
        gets = count_gets(reader, monkeypatch)
        entry = reader.entry("images/labels.csv")
        data = lake.files["images/labels.csv"]
        assert reader.read_range(entry, 0, 10) == data[:10]
        assert reader.read_range(entry, 10, 10**9) == data[10:]
        assert reader.read_range(entry, 5, 5) == b""
        assert len(gets) == 1


def test_a_damaged_pack_is_refused_naming_the_file(folder_lake: Lake) -> None:
    lake = folder_lake
    with CommitReader("xray@v1", hub=lake.hub) as reader:
        entry = reader.entry("images/Mass/020.png")
        loc = lake.hub.catalog.locate_blobs([entry.digest])[entry.digest]
        assert loc.pack_id is not None
        pack = lake.settings.home / "lake" / pack_key(loc.pack_id)
        os.chmod(pack, 0o644)
        raw = bytearray(pack.read_bytes())
        raw[loc.offset + 3] ^= 0xFF
        pack.write_bytes(bytes(raw))
        with pytest.raises(IntegrityError, match=r"images/Mass/020.png.*damaged") as caught:
            list(reader.read_many(reader.entries()))
        assert caught.value.hint
        with pytest.raises(IntegrityError):
            reader.read(entry)


def test_unknown_ref_and_path_are_not_found(lake: Lake) -> None:
    with pytest.raises(NotFoundError):
        CommitReader("xray@nosuchtag", hub=lake.hub)
    with CommitReader("xray@v1", hub=lake.hub) as reader, pytest.raises(NotFoundError) as caught:
        reader.entry("images/none.png")
    assert "images/none.png" in caught.value.message and caught.value.hint


def test_a_ready_cache_is_read_under_a_lease(lake: Lake, tmp_path: Path) -> None:
    cache_id = add_cache(lake, tmp_path / "vol")
    svc = CacheService(lake.hub)
    reader = CommitReader("xray@v1", hub=lake.hub)
    try:
        assert reader.source == "cache" and reader.cache is not None
        assert reader.cache.cache_id == cache_id and reader.cache.site == "onprem"
        assert svc.topology.get_cache(cache_id).leases == 1
        got = {e.path: data for e, data in reader.read_many(reader.entries())}
        assert got == lake.files
        entry = reader.entry("docs/readme.txt")
        assert reader.local_path(entry) == f"{reader.cache.root}/docs/readme.txt"
        assert reader.read_range(entry, 6, 10) == lake.files["docs/readme.txt"][6:10]
    finally:
        reader.close()
    assert svc.topology.get_cache(cache_id).leases == 0
    reader.close()  # idempotent


def test_cached_false_streams_and_cached_true_needs_a_cache(lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no ready cache") as caught:
        CommitReader("xray@v1", hub=lake.hub, cached=True)
    assert "cache add" in caught.value.hint
    add_cache(lake, tmp_path / "vol")
    with CommitReader("xray@v1", hub=lake.hub, cached=False) as reader:
        assert reader.source == "stream"
    with CommitReader("xray@v1", hub=lake.hub, site="elsewhere") as reader:
        assert reader.source == "stream"  # no volume of that site is mounted here
    with CommitReader("xray@v1", hub=lake.hub, cached=True, site="onprem") as reader:
        assert reader.source == "cache"


def test_a_cache_of_one_folder_serves_readers_of_that_folder(lake: Lake, tmp_path: Path) -> None:
    svc = CacheService(lake.hub)
    now = svc.clock.now()
    (tmp_path / "vol").mkdir()
    svc.topology.add_site("onprem", "", now)
    svc.topology.add_volume("onprem-nfs", "onprem", str(tmp_path / "vol"), 10**9, 86400, now)
    svc.ensure_ready(svc.request("xray", "v1", site="onprem", path="images/Edema"))
    with CommitReader("xray@v1", hub=lake.hub, paths=["images/Edema/"]) as reader:
        assert reader.source == "cache"
    with CommitReader("xray@v1", hub=lake.hub, paths=["images"]) as reader:
        assert reader.source == "stream"


def test_tracking_hears_which_commit_and_whether_the_cache_was_hit(
    lake: Lake, tmp_path: Path
) -> None:
    heard: list[ReadRecord] = []
    unsubscribe = subscribe(heard.append)
    try:
        with CommitReader("xray@v1", hub=lake.hub) as reader:
            reader.record(3, 300, reader="test")
        add_cache(lake, tmp_path / "vol")
        with CommitReader("xray@latest", hub=lake.hub) as reader:
            reader.record(4, 400, reader="test")
    finally:
        unsubscribe()
    commit = lake.hub.catalog.resolve("xray", "v1")
    assert [(r.commit_id, r.source, r.files, r.bytes) for r in heard] == [
        (commit, "stream", 3, 300),
        (commit, "cache", 4, 400),
    ]
    assert heard[1].site == "onprem" and heard[1].volume == "onprem-nfs"
    assert heard[0].cache_id is None and heard[1].cache_id is not None


def test_a_failing_listener_never_stops_reading(lake: Lake) -> None:
    def broken(record: ReadRecord) -> None:
        raise RuntimeError("tracker down")

    unsubscribe = subscribe(broken)
    try:
        with CommitReader("xray@v1", hub=lake.hub) as reader:
            rec = reader.record(1, 1, reader="test")
        assert rec.dataset == "xray"
    finally:
        unsubscribe()


def test_a_pickled_copy_reads_without_the_lease(lake: Lake, tmp_path: Path) -> None:
    cache_id = add_cache(lake, tmp_path / "vol")
    with CommitReader("xray@v1", hub=lake.hub) as reader:
        copy: Any = pickle.loads(pickle.dumps(reader))
        assert copy.source == "cache" and copy.commit_id == reader.commit_id
        entry = copy.entry("docs/readme.txt")
        assert copy.read(entry) == lake.files["docs/readme.txt"]
        copy.close()  # a copy holds no lease and releases none
        assert CacheService(lake.hub).topology.get_cache(cache_id).leases == 1
