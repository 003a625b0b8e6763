"""A two-site world for compute tests: onprem (small) and cloud (large), one queue bursting
from the first to the second. The catalog runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lakecache.cache.clock import ManualClock
from lakecache.catalog.topology import Topology
from lakecache.compute.model import Resources
from lakecache.compute.store import ComputeStore
from lakecache.data.hub import Hub
from lakecache.settings import Settings

GB = 10**9
DAY = 86400


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def compute_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """A local lake, with the catalog on SQLite and on a real PostgreSQL."""
    if request.param == "postgres":
        return settings.with_(catalog_url=request.getfixturevalue("pg_url"))
    return settings


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hub(compute_settings: Settings) -> Iterator[Hub]:
    h = Hub(compute_settings, remote=False)
    yield h
    h.close()


@pytest.fixture
def store(hub: Hub) -> ComputeStore:
    return ComputeStore(hub.catalog)


@dataclass(frozen=True)
class World:
    volumes: dict[str, Path]


@pytest.fixture
def world(hub: Hub, store: ComputeStore, clock: ManualClock, tmp_path: Path) -> World:
    """Sites onprem and cloud, each with a volume mounted here and a local compute pool.

    onprem-pool holds 2 CPUs (two 1-CPU jobs), cloud-pool 8; queue ``burst`` is
    [onprem-small, cloud-small] with policy order.
    """
    topology = Topology(hub.catalog)
    volumes = {}
    for site, cpus in (("onprem", 2), ("cloud", 8)):
        topology.add_site(site, f"the {site} site", clock.now())
        volumes[site] = tmp_path / f"vol-{site}"
        volumes[site].mkdir()
        topology.add_volume(f"{site}-vol", site, str(volumes[site]), 10 * GB, DAY, clock.now())
        topology.add_compute(f"{site}-pool", site, "local", {}, [], clock.now())
        store.set_capacity(f"{site}-pool", Resources(cpus * 1000, 16 * GB, 0))
        store.add_template(
            f"{site}-small", f"{site}-pool", Resources(1000, 1 * GB), None, clock.now()
        )
    store.add_queue("burst", ["onprem-small", "cloud-small"], now=clock.now())
    return World(volumes)
