"""Room on a volume, said plainly: too large for it, what holds it, what was evicted for it."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import make_files

from lakecache.cache.clock import ManualClock
from lakecache.cache.service import CacheFillError, CacheService
from lakecache.data.dataset import Dataset


@pytest.fixture
def small(svc: CacheService, clock: ManualClock, tmp_path: Path) -> str:
    svc.topology.add_site("lab", "", clock.now())
    (tmp_path / "lab").mkdir()
    svc.topology.add_volume("lab-nvme", "lab", str(tmp_path / "lab"), 100_000, 86400, clock.now())
    return "lab-nvme"


def test_a_commit_larger_than_the_whole_volume_says_so(
    svc: CacheService, xray: Dataset, small: str
) -> None:
    # xray@v1 is 60 files of 20 kB: 1.2 MB on a 100 kB volume.
    rec = svc.request("xray", "v1", volume=small)
    with pytest.raises(CacheFillError) as info:
        svc.ensure_ready(rec)
    msg = info.value.message
    assert "cannot fit even when empty" in msg and "100 kB" in msg
    assert "(filling)" not in msg  # never its own holder
    assert "volume set lab-nvme --capacity" in info.value.hint


def test_a_fill_that_evicts_says_which_and_how_much(
    svc: CacheService,
    xray: Dataset,
    small: str,
    clock: ManualClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc.topology.update_volume(small, capacity=45_000)
    a = svc.ensure_ready(svc.request("xray", "v1", volume=small, path="Edema/00000.png"))
    b = svc.ensure_ready(svc.request("xray", "v1", volume=small, path="Mass/00001.png"))
    clock.advance(timedelta(minutes=5))
    with caplog.at_level(logging.WARNING, logger="lakecache.cache"):
        c = svc.ensure_ready(svc.request("xray", "v1", volume=small, path="Hernia/00002.png"))
    assert c.state == "ready"
    assert svc.topology.get_cache(a.id).state == "evicted"  # least recently used first
    assert svc.topology.get_cache(b.id).state == "ready"
    note = svc.topology.get_cache(c.id).report or ""
    assert note.startswith("made room on lab-nvme: evicted 1 cache(s), 20 kB")
    assert a.name in note
    assert any("made room on lab-nvme" in r.getMessage() for r in caplog.records)


def test_when_nothing_can_go_the_holders_are_named_but_not_the_fill_itself(
    svc: CacheService, xray: Dataset, small: str, hub, tmp_path: Path
) -> None:
    svc.topology.update_volume(small, capacity=45_000)
    a = svc.ensure_ready(svc.request("xray", "v1", volume=small, path="Edema/00000.png"))
    svc.topology.set_pinned(a.id, True, now=svc.clock.now())
    big = Dataset.create("big", hub=hub)
    big.commit(make_files(tmp_path / "big", n=2, size=20_000, seed=9), "two files")
    rec = svc.request("big", None, volume=small)
    with pytest.raises(CacheFillError) as info:
        svc.ensure_ready(rec)
    msg = info.value.message
    assert f"{a.name} (pinned)" in msg and rec.name not in msg.split("held by:")[1]


def test_volume_capacity_and_ttl_can_be_changed(svc: CacheService, small: str) -> None:
    v = svc.topology.update_volume(small, capacity=2_000_000, ttl_seconds=3600)
    assert (v.capacity, v.ttl_seconds) == (2_000_000, 3600)
    v = svc.topology.update_volume(small, ttl_seconds=60)
    assert (v.capacity, v.ttl_seconds) == (2_000_000, 60)
    with pytest.raises(Exception, match="capacity must be positive"):
        svc.topology.update_volume(small, capacity=0)


def test_a_folder_of_a_commit_cached_whole_uses_the_whole_cache(
    svc: CacheService, xray: Dataset, sites: dict[str, Path]
) -> None:
    whole = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    assert svc.request("xray", "v1", site="onprem", path="Mass/").id == whole.id
    with svc.use("xray", "v1", site="onprem", path="Mass/") as p:
        assert (p / "Mass").is_dir() and (p / "Edema").is_dir()  # the whole commit's folder
    assert len(svc.topology.list_caches(volume="onprem-vol")) == 1


def test_the_sdk_names_its_own_arguments(svc: CacheService, xray: Dataset) -> None:
    with pytest.raises(Exception) as info:
        svc.request("xray", "v1")
    assert 'site="NAME"' in (info.value.hint or "")  # type: ignore[attr-defined]
