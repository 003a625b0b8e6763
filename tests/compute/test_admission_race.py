"""Several scheduler processes admitting from one queue at once never over-admit a template."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import World

from lakecache.cache.clock import ManualClock
from lakecache.compute.model import Resources
from lakecache.compute.store import ComputeStore
from lakecache.settings import Settings

SRC = Path(__file__).resolve().parents[2] / "src"

_SCHEDULER = """
import os, sys, time
from datetime import UTC, datetime
from lakecache.catalog import Catalog
from lakecache.compute.store import ComputeStore
url, go, mine = sys.argv[1], sys.argv[2], [int(i) for i in sys.argv[3].split(",")]
with Catalog.open(url) as catalog:
    store = ComputeStore(catalog)
    while not os.path.exists(go):
        time.sleep(0.001)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    # Each process admits its own jobs, as servers do with the jobs submitted to them.
    placed = sum(store.admit(i, now=now) is not None for i in mine)
    placed += store.schedule(now=now)
    print(placed)
"""


def test_concurrent_schedulers_fill_each_pool_exactly_to_its_capacity(
    compute_settings: Settings,
    store: ComputeStore,
    clock: ManualClock,
    world: World,
    tmp_path: Path,
) -> None:
    # Room for 10 one-CPU jobs on onprem and 30 on cloud; 80 jobs and 6 schedulers race for it.
    store.set_capacity("onprem-pool", Resources(10_000, 10**11))
    store.set_capacity("cloud-pool", Resources(30_000, 10**11))
    ids = [
        store.submit(
            "burst", ["true"], request=Resources(1000, 10**9), submitted_by="t", now=clock.now()
        ).id
        for _ in range(80)
    ]
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _SCHEDULER,
                compute_settings.catalog_url,
                str(go),
                ",".join(str(i) for i in ids[k::6]),
            ],
            env={"PYTHONPATH": str(SRC), "PATH": os.environ["PATH"]},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(6)
    ]
    time.sleep(1.5)  # let every process import and connect, then start them together
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in outs]
    placed_by = [int(out.strip()) for out, _ in outs]
    jobs = [store.get_job(i) for i in ids]
    sites = [j.site for j in jobs if j.state == "placed"]
    assert (sites.count("onprem"), sites.count("cloud")) == (10, 30)
    assert sum(placed_by) == 40  # each admission counted once, by the process that won it
    for cap in store.capacity():
        assert cap.used.fits_in(cap.total), cap
    assert sum(1 for j in jobs if j.state == "queued") == 40


def test_a_job_another_scheduler_placed_mid_plan_is_not_counted_twice(
    store: ComputeStore, clock: ManualClock, world: World, monkeypatch: object
) -> None:
    # onprem has room for two one-CPU jobs. Between this scheduler's reads, another places
    # job 1 on onprem: job 2 must still find onprem's second slot, not burst to the cloud
    # because job 1 (queued when read here) was counted once as queued and once as placed.
    first, second = (
        store.submit(
            "burst", ["true"], request=Resources(1000, 10**9), submitted_by="t", now=clock.now()
        )
        for _ in range(2)
    )
    other = ComputeStore(store._c)
    real = ComputeStore._queued
    raced = []

    def queued_then_raced(self: ComputeStore, ids: list[int]) -> object:
        out = real(self, ids)
        if self is store and not raced:
            raced.append(other.admit(first.id, now=clock.now()))
        return out

    monkeypatch.setattr(ComputeStore, "_queued", queued_then_raced)  # type: ignore[attr-defined]
    placed = store.admit_many([first.id, second.id], now=clock.now())
    assert raced and raced[0] is not None and raced[0].site == "onprem"
    assert [(j.id, j.site) for j in placed] == [(second.id, "onprem")]
    for cap in store.capacity():
        assert cap.used.fits_in(cap.total), cap
