"""Eviction against leasing, in two real processes on a real PostgreSQL, 1,000 rounds.

Each round both processes wait at a barrier, then one starts an eviction of a
ready cache while the other takes a lease on it. Serialised on the cache row,
exactly one wins: a cache with a live lease is never made ``evicting``, and a
lease handed out is never deleted by an eviction (its renewal works).
"""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
from helpers import make_files

from lakecache.catalog.topology import Topology
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.errors import UserError
from lakecache.settings import Settings

ROUNDS = 1000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _evictor(settings: Settings, cache_id: int, barrier: Barrier, out: Any) -> None:
    hub = Hub(settings)
    topo = Topology(hub.catalog)
    won, broken = 0, []
    try:
        for i in range(ROUNDS):
            barrier.wait()
            now = T0 + timedelta(seconds=i)
            token = topo.start_eviction(cache_id, now=now)
            if token:
                won += 1
                rec = topo.get_cache(cache_id, now)
                if rec.leases:
                    broken.append(f"round {i}: evicting with {rec.leases} live lease(s)")
            barrier.wait()  # the leaser checks its lease
            barrier.wait()
            if token:  # back to ready for the next round
                topo.update_cache(cache_id, state="ready")
            barrier.wait()
    finally:
        hub.close()
    out.put(("evictor", won, broken))


def _leaser(settings: Settings, cache_id: int, barrier: Barrier, out: Any) -> None:
    hub = Hub(settings)
    topo = Topology(hub.catalog)
    won, broken = 0, []
    try:
        for i in range(ROUNDS):
            barrier.wait()
            now = T0 + timedelta(seconds=i)
            try:
                lease: int | None = topo.add_lease(
                    cache_id, "job", now=now, expires_at=now + timedelta(minutes=5)
                )
            except UserError:
                lease = None  # the eviction came first: refused, and told so
            barrier.wait()
            if lease is not None:
                won += 1
                state = topo.get_cache(cache_id, now).state
                if state != "ready":
                    broken.append(f"round {i}: leased, but the cache is {state}")
                try:
                    topo.renew_lease(lease, now=now, expires_at=now + timedelta(minutes=5))
                    topo.release_lease(lease, now=now)
                except UserError as exc:
                    broken.append(f"round {i}: lease dropped: {exc}")
                except Exception as exc:  # noqa: BLE001 - the parent test reports it
                    broken.append(f"round {i}: {type(exc).__name__}: {exc}")
            barrier.wait()
            barrier.wait()
    finally:
        hub.close()
    out.put(("leaser", won, broken))


@pytest.mark.postgres
def test_eviction_and_leasing_never_cross_in_1000_rounds(
    settings: Settings, pg_url: str, tmp_path: Path
) -> None:
    """Fails on the old code: an eviction that had counted no lease deleted one taken meanwhile."""
    s = settings.with_(catalog_url=pg_url)
    hub = Hub(s)
    try:
        ds = Dataset.create("xray", hub=hub)
        ds.commit(make_files(tmp_path / "src", n=3), message="v1")
        topo = Topology(hub.catalog)
        topo.add_site("onprem", "", T0)
        topo.add_volume("vol", "onprem", str(tmp_path / "vol"), 10**9, 86400, T0)
        commit = hub.catalog.resolve("xray", None)
        rec, _ = topo.request_cache("xray", commit, "vol", "", files=3, nbytes=1, now=T0)
        token = topo.claim_fill(rec.id, "setup", now=T0, stale_after=timedelta(seconds=15))
        assert token is not None
        topo.complete_fill(rec.id, token=token, linked_bytes=0, fetched_bytes=0, now=T0)
    finally:
        hub.close()

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2, timeout=60)
    out = ctx.Queue()
    procs = [ctx.Process(target=fn, args=(s, rec.id, barrier, out)) for fn in (_evictor, _leaser)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in procs:
            role, won, broken = out.get(timeout=600)
            results[role] = (won, broken)
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    (evicted, evict_broken), (leased, lease_broken) = results["evictor"], results["leaser"]
    assert evict_broken == [] and lease_broken == []
    assert evicted + leased == ROUNDS, "each round exactly one wins"
    assert evicted > 0 and leased > 0, (evicted, leased)
