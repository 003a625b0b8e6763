"""Through a server, what a newcomer is told: who can cache, that no agent fills, sizes set."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from client.world import LakeWorld
from lakecache.cache.api import use
from lakecache.cache.service import CacheFillError, CacheService
from lakecache.client import AccessDeniedError


def _site_without_agent(lake_world: LakeWorld, tmp_path: Path) -> tuple[str, Path]:
    name = f"lab-{uuid.uuid4().hex[:6]}"
    root = tmp_path / f"vol-{name}"
    root.mkdir()  # this machine mounts it; no agent runs at the site
    hub = lake_world.hub("admin", tmp_path / "admin-home")
    try:
        topo = CacheService(hub).topology
        topo.add_site(name, "no agent here")
        topo.add_volume(name, name, str(root), 10**9, 86400)
    finally:
        hub.close()
    return name, root


def test_a_reader_is_told_the_commit_is_not_cached_and_who_can_cache_it(
    lake_world: LakeWorld, tmp_path: Path
) -> None:
    site, _ = _site_without_agent(lake_world, tmp_path)
    rita = lake_world.settings("rita", tmp_path / "rita")
    with pytest.raises(AccessDeniedError) as info, use("xray@v1", site=site, settings=rita):
        pass
    msg, hint = info.value.message, info.value.hint or ""
    assert f"is not cached at site '{site}'" in msg and "only writers of 'xray'" in msg
    assert "this needs writer" not in msg
    assert "lakecache cache add xray@" in hint and "cached=False" in hint


def test_waiting_on_a_cache_nobody_fills_says_there_is_no_agent(
    lake_world: LakeWorld, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site, _ = _site_without_agent(lake_world, tmp_path)
    # A writer asks for it (without filling it here); a reader then waits for it.
    wendy = lake_world.hub("wendy", tmp_path / "wendy")
    rita = lake_world.hub("rita", tmp_path / "rita")
    try:
        rec = CacheService(wendy).request("xray", "v1", site=site)
        assert rec.state == "pending"
        svc = CacheService(rita, no_agent_warning_after=0.2, poll_every=0.05)
        with (
            caplog.at_level(logging.WARNING, logger="lakecache.cache"),
            pytest.raises(CacheFillError, match="still pending"),
        ):
            svc.ensure_ready(rec, timeout=1.5)
    finally:
        wendy.close()
        rita.close()
    said = [r.getMessage() for r in caplog.records if "waiting for cache" in r.getMessage()]
    assert said == [
        f"waiting for cache {rec.name}: no agent at {site}: run `lakecache agent --site {site}` "
        "on a machine that mounts it"
    ]


def test_an_org_admin_sets_a_volumes_capacity_and_ttl(
    lake_world: LakeWorld, tmp_path: Path
) -> None:
    site, _ = _site_without_agent(lake_world, tmp_path)
    admin = lake_world.hub("admin", tmp_path / "admin")
    wendy = lake_world.hub("wendy", tmp_path / "wendy2")
    try:
        v = CacheService(admin).topology.update_volume(site, capacity=5 * 10**9, ttl_seconds=600)
        assert (v.capacity, v.ttl_seconds) == (5 * 10**9, 600)
        assert lake_world.world.plane.topology.get_volume(site).capacity == 5 * 10**9
        with pytest.raises(AccessDeniedError):
            CacheService(wendy).topology.update_volume(site, capacity=1)
    finally:
        admin.close()
        wendy.close()
