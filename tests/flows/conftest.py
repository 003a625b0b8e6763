"""A one-site world for flows: a local compute pool, a queue, a dataset, a runner thread."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import make_files
from server.live import World, build_world

from lakecache.cache.clock import SystemClock
from lakecache.cache.service import CacheService
from lakecache.catalog.topology import Topology
from lakecache.compute.model import Resources
from lakecache.compute.runner import JobRunner
from lakecache.compute.store import ComputeStore
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.flows.engine import FlowEngine
from lakecache.settings import Settings

GB = 10**9
PY = sys.executable


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def flow_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """A local lake, with the catalog on SQLite and on a real PostgreSQL."""
    if request.param == "postgres":
        return settings.with_(catalog_url=request.getfixturevalue("pg_url"))
    return settings


@pytest.fixture
def hub(flow_settings: Settings) -> Iterator[Hub]:
    h = Hub(flow_settings, remote=False)
    yield h
    h.close()


@dataclass
class FlowWorld:
    hub: Hub
    store: ComputeStore
    engine: FlowEngine
    tmp: Path

    def runner(self, name: str = "r1", **kw: object) -> JobRunner:
        caches = CacheService(self.hub, clock=SystemClock(), poll_every=0.05)
        return JobRunner(
            caches,
            "onprem",
            interval=0.05,
            heartbeat_every=0.2,
            jobs_root=self.tmp / "jobs",
            worker=name,
            **kw,  # type: ignore[arg-type]
        )


def add_world(hub: Hub, tmp: Path, cpus: int = 4) -> None:
    """Site onprem with a volume, a local pool of ``cpus`` cores, template small and
    queue ``q``; dataset xray@v1 (9 small files)."""
    now = SystemClock().now()
    topology = Topology(hub.catalog)
    store = ComputeStore(hub.catalog)
    topology.add_site("onprem", "the onprem site", now)
    (tmp / "vol").mkdir()
    topology.add_volume("onprem-vol", "onprem", str(tmp / "vol"), 10 * GB, 86400, now)
    topology.add_compute("onprem-pool", "onprem", "local", {}, [], now)
    store.set_capacity("onprem-pool", Resources(cpus * 1000, 16 * GB, 0))
    store.add_template("small", "onprem-pool", Resources(1000, 1 * GB), None, now)
    store.add_queue("q", ["small"], now=now)
    ds = Dataset.create("xray", hub=hub)
    ds.commit(make_files(tmp / "xray-src", n=9, size=500), message="v1")
    ds.tag("v1")


@pytest.fixture
def world(hub: Hub, tmp_path: Path) -> FlowWorld:
    add_world(hub, tmp_path)
    return FlowWorld(hub, ComputeStore(hub.catalog), FlowEngine(hub), tmp_path)


@pytest.fixture
def running(world: FlowWorld) -> Iterator[JobRunner]:
    """The site's job runner, looping in a thread."""
    runner = world.runner()
    thread = threading.Thread(target=runner.run_forever, daemon=True)
    thread.start()
    yield runner
    runner.stop_event.set()
    thread.join(timeout=60)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[World]:
    """A server (no in-process agents) with a pool, queue ``q`` and dataset ``results``
    (wendy writes it, rita reads it), and a job runner for site local on this machine."""
    w = build_world(tmp_path / "home", tmp_path / "src", agents=False)
    plane, now = w.plane, w.plane.clock.now()
    plane.topology.add_compute("pool", "local", "local", {}, [], now)
    store = ComputeStore(plane.hub.catalog)
    store.set_capacity("pool", Resources(4000, 10**10))
    store.add_template("t1", "pool", Resources(1000, 10**9), None, now)
    store.add_queue("q", ["t1"], now=now)
    plane.accounts.create_owned_dataset("results", "wendy", now=now)
    plane.accounts.set_member("results", "rita", "reader", now=now)
    hub = Hub(w.settings, remote=False)
    runner = JobRunner(
        CacheService(hub, clock=SystemClock(), poll_every=0.05),
        "local",
        interval=0.05,
        heartbeat_every=0.2,
        jobs_root=tmp_path / "jobs",
    )
    thread = threading.Thread(target=runner.run_forever, daemon=True)
    thread.start()
    yield w
    runner.stop_event.set()
    thread.join(timeout=60)
    hub.close()
    w.server.stop()
    w.plane.close()
