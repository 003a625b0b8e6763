"""``make demo``'s compute part, as the demo runs it: real CLI processes and real site agents.

The demo's earlier parts (a SeaweedFS lake, commits, caches on two sites) are
stood in for by a folder lake, a commit, the two sites and a cache at cloud made in
Python; then the compute part runs as the demo runs it: pools at both sites, a queue
that tries on-prem first, a long job filling on-prem, and the job that bursts to
the cloud, reading the dataset from the cache there.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lakecache import demo, synth
from lakecache.cache.service import CacheService
from lakecache.catalog.topology import Topology
from lakecache.compute.store import ComputeStore
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.settings import Settings


def test_the_demo_bursts_a_job_to_the_cloud_where_its_dataset_is_cached(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    home, lake = tmp_path / "home", tmp_path / "lake"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKECACHE_", "AWS_"))}
    env.update(LAKECACHE_HOME=str(home), LAKECACHE_LAKE=str(lake))
    cli = demo._Cli(env, tmp_path)
    # The demo's earlier parts, in Python (each CLI process costs seconds on a busy machine).
    files, _ = synth.generate(tmp_path / "data", 12, median_size=2_000, seed=5)
    settings = Settings.load(env)
    hub = Hub(settings, remote=False)
    try:
        ds = Dataset.create(demo.DATASET, hub=hub)
        ds.commit(tmp_path / "data", message="first import")
        topology, now = Topology(hub.catalog), datetime.now(UTC)
        for site, description, vol in demo.SITES:
            topology.add_site(site, description, now)
            (tmp_path / vol).mkdir()
            topology.add_volume(vol, site, str(tmp_path / vol), 10**9, 86400, now)
        caches = CacheService(hub)
        caches.ensure_ready(caches.request(demo.DATASET, "latest", site="cloud"))
    finally:
        hub.close()
    capfd.readouterr()

    job_id = demo._burst_to_cloud(cli, tmp_path / "state")

    out = capfd.readouterr().out
    assert f"job {job_id} placed on cloud-small at cloud" in out
    assert f"{files} images, read-only" in out  # the job's own log, streamed by job logs -f
    assert "burst" in out and "full" in out and "chosen" in out  # job show: placement
    assert "data ready" in out and "(cached)" in out  # job show: timeline
    hub = Hub(settings, remote=False)
    try:
        store = ComputeStore(hub.catalog)
        job = store.get_job(job_id)
        assert (job.state, job.site, job.template) == ("succeeded", "cloud", "cloud-small")
        verdicts = {v.template: v.verdict for v in job.placement}
        assert verdicts == {"onprem-small": "full", "cloud-small": "chosen"}
        long_jobs = [j for j in store.list_jobs() if j.id != job_id]
        assert [(j.site, j.state) for j in long_jobs] == [("onprem", "cancelled")]
        # The job read the cloud's cache: no cache was filled on-prem for it.
        caches = Topology(hub.catalog).list_caches(dataset=demo.DATASET)
        assert [(c.site, c.state) for c in caches] == [("cloud", "ready")]
    finally:
        hub.close()
    # Both agents stopped: nothing of theirs is left running.
    assert "running; Ctrl-C to stop" in (tmp_path / "state" / "agents.log").read_text()
