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
url, go = sys.argv[1:3]
with Catalog.open(url) as catalog:
    store = ComputeStore(catalog)
    while not os.path.exists(go):
        time.sleep(0.001)
    placed = 0
    for _ in range(5):
        placed += store.schedule(now=datetime(2026, 1, 1, tzinfo=UTC))
    print(placed)
"""


def test_concurrent_schedulers_fill_each_pool_exactly_to_its_capacity(
    compute_settings: Settings,
    store: ComputeStore,
    clock: ManualClock,
    world: World,
    tmp_path: Path,
) -> None:
    ids = [
        store.submit(
            "burst", ["true"], request=Resources(1000, 10**9), submitted_by="t", now=clock.now()
        ).id
        for _ in range(30)
    ]
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SCHEDULER, compute_settings.catalog_url, str(go)],
            env={"PYTHONPATH": str(SRC), "PATH": os.environ["PATH"]},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    time.sleep(1.5)  # let every process import and connect, then start them together
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    placed_by = [int(out.strip()) for out, _ in outs]
    jobs = [store.get_job(i) for i in ids]
    sites = [j.site for j in jobs if j.state == "placed"]
    assert sites.count("onprem") == 2 and sites.count("cloud") == 8
    assert sum(placed_by) == 10  # each admission counted once, by the process that won it
    for cap in store.capacity():
        assert cap.used.fits_in(cap.total), cap
    assert sum(1 for j in jobs if j.state == "queued") == 20
