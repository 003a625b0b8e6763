"""Fencing through a live server: the claim's token travels in every step, a stale one gets 409.

A worker that works through the server (RemoteTopology) learns that its fill
or eviction was taken over from the server's 409 ``taken_over`` and raises
TakenOverError; a lease the server lost to an eviction is LeaseLostError.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from client.world import LakeWorld
from lakecache.cache.service import CacheService
from lakecache.errors import LeaseLostError, TakenOverError


def _site(lake_world: LakeWorld, tmp_path: Path) -> str:
    name = f"fence-{uuid.uuid4().hex[:6]}"
    root = tmp_path / f"vol-{name}"
    hub = lake_world.hub("admin", tmp_path / "admin-home")
    try:
        topo = CacheService(hub).topology
        topo.add_site(name, "a site made in a test")
        topo.add_volume(name, name, str(root), 10**9, 86400)
        root.mkdir()
    finally:
        hub.close()
    return name


def test_a_stale_token_gets_409_taken_over_and_the_remote_worker_stops(
    lake_world: LakeWorld, tmp_path: Path
) -> None:
    """Fails on the old code: steps carried no token, so a stalled filler could still publish."""
    site = _site(lake_world, tmp_path)
    plane = lake_world.world.plane
    call = lake_world.call
    rec = plane.caches().request("xray", "v1", site=site, path="docs")
    base = f"/api/v1/caches/{rec.id}"
    hub = lake_world.hub("wendy", tmp_path / "wendy")
    try:
        remote = CacheService(hub).topology
        first = remote.claim_fill(rec.id, "h:1", stale_after=timedelta(seconds=15))
        assert first is not None
        assert remote.beat_fill(rec.id, token=first, done_bytes=1)
        # The first worker is paused for 20 s: its heartbeat goes stale (set on the row,
        # standing for the wait), and a second worker of the same user takes over.
        stale_at = plane.clock.now() - timedelta(seconds=20)
        plane.topology.update_cache(rec.id, heartbeat_at=stale_at)
        second = remote.claim_fill(rec.id, "h:2", stale_after=timedelta(seconds=15))
        assert second is not None and second > first

        for step, body in (
            ("heartbeat", {"done_bytes": 2}),
            ("ready", {"linked_bytes": 0, "fetched_bytes": 0}),
            ("failed", {"reason": "disk"}),
        ):
            r = call("wendy", "POST", f"{base}/{step}", json={"token": first, **body})
            assert r.status_code == 409, (step, r.text)
            assert r.json()["error"]["code"] == "taken_over"
        with pytest.raises(TakenOverError):
            remote.beat_fill(rec.id, token=first, done_bytes=2)
        with pytest.raises(TakenOverError):
            remote.complete_fill(rec.id, token=first, linked_bytes=0, fetched_bytes=0)
        assert remote.get_cache(rec.id).state == "filling"
        assert remote.complete_fill(rec.id, token=second, linked_bytes=0, fetched_bytes=0)

        # Evictions are fenced the same way, and a lease lost to one is reported.
        lease = remote.add_lease(rec.id, "job")
        plane.topology.update_cache(rec.id, last_used_at=stale_at)
        with plane.hub.catalog._write() as conn:  # the holder stalled: its lease lapsed
            from lakecache.catalog import topology_tables as tt

            conn.execute(tt.leases.update().values(expires_at=stale_at))
        evicting = remote.start_eviction(rec.id)
        assert evicting is not None and evicting > second
        with pytest.raises(TakenOverError):
            remote.finish_eviction(rec.id, token=second)
        assert remote.finish_eviction(rec.id, token=evicting)
        assert remote.get_cache(rec.id).state == "evicted"
        with pytest.raises(LeaseLostError):
            remote.renew_lease(lease)
    finally:
        hub.close()
