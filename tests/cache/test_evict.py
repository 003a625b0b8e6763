"""Eviction: the pure plan, TTL with a clock the test controls, room for a fill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lakecache.cache.clock import ManualClock
from lakecache.cache.plan import CacheView, plan_eviction
from lakecache.cache.service import CacheFillError, CacheService
from lakecache.data.dataset import Dataset

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(days=1)


def view(
    i: int,
    *,
    age_h: float,
    size: int = 100,
    state: str = "ready",
    pinned: bool = False,
    leases: int = 0,
) -> CacheView:
    return CacheView(i, f"ds@{i}", state, size, T0 - timedelta(hours=age_h), pinned, leases)


def test_plan_ttl_keeps_pinned_leased_and_busy() -> None:
    caches = [
        view(1, age_h=30),
        view(2, age_h=30, pinned=True),
        view(3, age_h=30, leases=1),
        view(4, age_h=30, state="filling"),
        view(5, age_h=2),
    ]
    plan = plan_eviction(caches, now=T0, ttl=TTL)
    assert [(e.cache_id, e.reason) for e in plan.evictions] == [(1, "ttl")]
    assert plan.bytes_freed == 100


def test_plan_room_is_lru_and_explains_what_blocks() -> None:
    caches = [
        view(1, age_h=5),
        view(2, age_h=9),
        view(3, age_h=1),
        view(4, age_h=20, pinned=True, size=1000),
    ]
    plan = plan_eviction(caches, now=T0, ttl=TTL, available=50, need_bytes=220)
    assert [e.cache_id for e in plan.evictions] == [2, 1]
    assert plan.fits and plan.available_after == 250
    blocked = plan_eviction(caches, now=T0, ttl=TTL, available=0, need_bytes=5000)
    assert not blocked.fits
    assert "ds@4 (pinned): 1 kB" in blocked.explain()


def test_ttl_eviction_with_controlled_clock(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, clock: ManualClock, tmp_path: Path
) -> None:
    from helpers import write

    a = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    write(tmp_path / "src", "extra.png", b"x", age=5)
    xray.commit(tmp_path / "src", message="v2")
    b = svc.ensure_ready(svc.request("xray", "latest", site="onprem"))
    write(tmp_path / "src", "extra2.png", b"y", age=5)
    xray.commit(tmp_path / "src", message="v3")
    c = svc.ensure_ready(svc.request("xray", "latest", site="onprem"))
    svc.topology.update_cache(c.id, pinned=True)

    clock.advance(timedelta(hours=23))
    assert all(not p.evictions for _, p in svc.gc(dry_run=True))
    clock.advance(timedelta(hours=2))
    with svc.use("xray", b.commit_id, volume="onprem-vol"):
        # b was touched just now by the lease; a is past its TTL; c is pinned.
        plans = dict((v.name, p) for v, p in svc.gc(dry_run=True))
        assert [e.cache_id for e in plans["onprem-vol"].evictions] == [a.id]
        svc.gc()
        states = {r.id: r.state for r in svc.topology.list_caches()}
    assert states == {a.id: "evicted", b.id: "ready", c.id: "ready"}
    assert not svc.cache_path(a).exists()
    assert svc.cache_path(c).exists()


def test_leased_cache_past_ttl_is_kept_until_the_lease_ends(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, clock: ManualClock
) -> None:
    rec = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    now = clock.now()
    lease = svc.topology.add_lease(rec.id, "job-1", now=now, expires_at=now + timedelta(days=10))
    clock.advance(timedelta(days=3))
    svc.gc()
    assert svc.topology.get_cache(rec.id).state == "ready"
    svc.topology.release_lease(lease, now=clock.now() - timedelta(days=2))  # last used 1 day+ ago
    svc.gc()
    assert svc.topology.get_cache(rec.id).state == "evicted"


def test_dead_holder_lease_lapses(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, clock: ManualClock
) -> None:
    rec = svc.ensure_ready(svc.request("xray", "v1", site="onprem"))
    now = clock.now()
    svc.topology.add_lease(rec.id, "dead-job", now=now, expires_at=now + timedelta(seconds=60))
    clock.advance(timedelta(seconds=30))
    assert svc.evict(rec.id) is False
    clock.advance(timedelta(days=2))  # no heartbeat renewed it: it lapsed long ago
    assert svc.topology.get_cache(rec.id, clock.now()).leases == 0
    assert svc.evict(rec.id) is True


def test_fill_makes_room_lru_or_fails_naming_the_holder(
    svc: CacheService, sites: dict[str, Path], xray: Dataset, clock: ManualClock, tmp_path: Path
) -> None:
    from helpers import make_files

    size = xray.get_commit("v1").bytes
    topo = svc.topology
    topo.add_site("tiny", "", clock.now())
    topo.add_volume("tiny-vol", "tiny", str(tmp_path / "tiny"), int(size * 1.5), 86400, clock.now())
    first = svc.ensure_ready(svc.request("xray", "v1", site="tiny"))
    clock.advance(timedelta(hours=1))
    other = Dataset.create("other", hub=svc.hub)
    other.commit(make_files(tmp_path / "other", seed=7), message="o")
    second = svc.ensure_ready(svc.request("other", None, site="tiny"))
    assert topo.get_cache(first.id).state == "evicted"  # LRU went to make room
    topo.update_cache(second.id, pinned=True)
    clock.advance(timedelta(hours=1))
    with pytest.raises(CacheFillError, match=r"no room on volume 'tiny-vol'.*other@.*\(pinned\)"):
        svc.ensure_ready(svc.request("xray", "v1", site="tiny"))
    failed = [c for c in topo.list_caches(volume="tiny-vol") if c.dataset == "xray"][0]
    assert failed.state == "failed" and "pinned" in (failed.error or "")
    assert topo.get_cache(second.id).state == "ready"
