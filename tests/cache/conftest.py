from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import make_files

from lakecache.cache.clock import ManualClock
from lakecache.cache.service import CacheService
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.settings import Settings

DAY = 86400


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def cache_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """A local lake, with the catalog on SQLite and on a real PostgreSQL."""
    if request.param == "postgres":
        return settings.with_(catalog_url=request.getfixturevalue("pg_url"))
    return settings


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hub(cache_settings: Settings) -> Iterator[Hub]:
    h = Hub(cache_settings)
    yield h
    h.close()


@pytest.fixture
def svc(hub: Hub, clock: ManualClock) -> CacheService:
    return CacheService(hub, clock=clock, lease_ttl=timedelta(seconds=60), poll_every=0.02)


@pytest.fixture
def sites(svc: CacheService, clock: ManualClock, tmp_path: Path) -> dict[str, Path]:
    """Two sites, each with a volume (local folders standing for their mounts)."""
    topo = svc.topology
    roots = {}
    for site in ("onprem", "cloud"):
        topo.add_site(site, f"the {site} site", clock.now())
        roots[site] = tmp_path / f"vol-{site}"
        roots[site].mkdir()  # mounted on this machine
        topo.add_volume(f"{site}-vol", site, str(roots[site]), 10**9, DAY, clock.now())
    return roots


@pytest.fixture
def xray(hub: Hub, tmp_path: Path) -> Dataset:
    ds = Dataset.create("xray", hub=hub)
    ds.commit(make_files(tmp_path / "src"), message="v1")
    ds.tag("v1")
    return ds
