"""Time limits and faults: a job past its time limit is stopped and failed; an input commit
deleted while the job is queued fails it with a reason naming it (a moved ref does not:
the job keeps the commit it was submitted with); a site whose agent is down makes its
jobs wait or move on, by the queue's policy, and says so; a backend that refuses fails
the job with the backend's message, with nothing left holding a slot."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import World
from helpers import make_files

from lakecache.cache.clock import ManualClock, SystemClock
from lakecache.cache.service import CacheService
from lakecache.catalog.accounts import Accounts
from lakecache.catalog.topology import Topology
from lakecache.compute.admission import RUNNER_SEEN_WITHIN
from lakecache.compute.model import InputSpec, JobRecord, Resources
from lakecache.compute.runner import JobRunner
from lakecache.compute.store import ComputeStore
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.errors import UserError

ONE_CPU = Resources(1000, 10**9)


@pytest.fixture
def onprem(hub: Hub, world: World, tmp_path: Path) -> Iterator[JobRunner]:
    caches = CacheService(hub, clock=SystemClock(), poll_every=0.05)
    runner = JobRunner(
        caches, "onprem", interval=0.05, heartbeat_every=0.2, jobs_root=tmp_path / "jobs"
    )
    yield runner
    runner.close()


def _submit(store: ComputeStore, *command: str, queue: str = "burst", **kw: object) -> JobRecord:
    return store.submit(
        queue,
        command,
        request=ONE_CPU,
        submitted_by="tester",
        now=SystemClock().now(),
        **kw,  # type: ignore[arg-type]
    )


def _until_done(runner: JobRunner, store: ComputeStore, job_id: int) -> JobRecord:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runner.run_once()
        job = store.get_job(job_id)
        if job.done:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} is still {store.get_job(job_id).state}")


# -- time limits -------------------------------------------------------------------------


def test_a_job_past_its_time_limit_is_stopped_and_fails_saying_so(
    store: ComputeStore, onprem: JobRunner, tmp_path: Path
) -> None:
    marker = tmp_path / "still-running"
    job = _submit(store, "sh", "-c", f"sleep 1.5; touch {marker}; sleep 60", timeout_seconds=1)
    assert job.timeout_seconds == 1
    t0 = time.monotonic()
    job = _until_done(onprem, store, job.id)
    assert (job.state, job.reason) == ("failed", "timed out after 1 s")
    assert time.monotonic() - t0 < 15
    time.sleep(1)
    assert not marker.exists()  # stopped, not left running
    assert store.capacity()[1].jobs == 0  # its slot is free again
    assert store.timeline(job.id)[-1].detail.endswith("timed out after 1 s")


def test_a_queue_gives_its_time_limit_to_jobs_that_set_none(
    store: ComputeStore, world: World, clock: ManualClock
) -> None:
    store.add_queue("limited", ["onprem-small"], job_timeout=timedelta(minutes=5), now=clock.now())
    assert store.get_queue("limited").job_timeout_seconds == 300
    assert _submit(store, "true", queue="limited").timeout_seconds == 300
    assert _submit(store, "true", queue="limited", timeout_seconds=20).timeout_seconds == 20
    assert _submit(store, "true").timeout_seconds is None  # burst sets none
    with pytest.raises(UserError, match="from 1 s to 30 days") as info:
        _submit(store, "true", timeout_seconds=0)
    assert "--timeout" in info.value.hint


# -- inputs that go away while queued ----------------------------------------------------


@pytest.fixture
def xray(hub: Hub, tmp_path: Path) -> Dataset:
    ds = Dataset.create("xray", hub=hub)
    ds.commit(make_files(tmp_path / "v1", n=3, size=100), message="v1")
    ds.tag("v1")
    return ds


def _fill_the_queue(store: ComputeStore, clock: ManualClock) -> None:
    """Both sites full: a job submitted now waits in the queue."""
    for _ in range(10):
        _submit(store, "true")
    store.schedule(now=clock.now())


def test_an_input_commit_deleted_while_queued_fails_the_job_naming_it(
    hub: Hub, store: ComputeStore, world: World, clock: ManualClock, xray: Dataset
) -> None:
    commit = hub.catalog.resolve("xray", "v1")
    _fill_the_queue(store, clock)
    job = _submit(store, "true", inputs=[InputSpec("scans", "xray", "v1", commit, "stream")])
    store.schedule(now=clock.now())
    assert store.get_job(job.id).state == "queued"
    Accounts(hub.catalog).delete_dataset("xray")
    store.schedule(now=clock.now())
    failed = store.get_job(job.id)
    assert failed.state == "failed"
    assert failed.reason is not None
    assert f"commit {commit[:12]} of dataset 'xray'" in failed.reason
    assert "input scans" in failed.reason and "deleted while the job was queued" in failed.reason
    assert store.timeline(job.id)[-1].kind == "failed"


def test_a_ref_moved_while_queued_leaves_the_job_on_the_commit_it_was_given(
    hub: Hub, store: ComputeStore, onprem: JobRunner, xray: Dataset, tmp_path: Path
) -> None:
    commit = hub.catalog.resolve("xray", "v1")
    job = _submit(
        store,
        "sh",
        "-c",
        'find "$LAKECACHE_INPUT_XRAY" -type f | wc -l',
        inputs=[InputSpec("xray", "xray", "v1", commit, "stream")],
    )
    # The tag moves to a commit with more files before the job starts.
    xray.commit(make_files(tmp_path / "v2", n=7, size=100), message="v2")
    xray.tag("v1", force=True)
    assert hub.catalog.resolve("xray", "v1") != commit
    done = _until_done(onprem, store, job.id)
    assert done.state == "succeeded", done.reason
    assert done.inputs[0].commit_id == commit
    assert done.workdir is not None
    assert (Path(done.workdir) / "job.log").read_text().strip() == "3"


# -- a site whose agent is down ----------------------------------------------------------


def test_a_queue_that_moves_on_passes_over_a_site_without_an_agent(
    store: ComputeStore, world: World, clock: ManualClock
) -> None:
    store.add_queue("movers", ["onprem-small", "cloud-small"], agent_down="move", now=clock.now())
    store.runner_seen("cloud-agent", "cloud", now=clock.now())
    job = _submit(store, "true", queue="movers")
    store.schedule(now=clock.now())
    placed = store.get_job(job.id)
    assert (placed.state, placed.site) == ("placed", "cloud")
    assert [(v.template, v.verdict) for v in placed.placement] == [
        ("onprem-small", "no agent"),
        ("cloud-small", "chosen"),
    ]
    assert "no job runner seen lately at onprem" in placed.placement[0].detail


def test_a_job_placed_where_the_agent_then_went_down_moves_on_or_waits_by_policy(
    store: ComputeStore, world: World, clock: ManualClock
) -> None:
    store.add_queue("movers", ["onprem-small", "cloud-small"], agent_down="move", now=clock.now())
    store.runner_seen("onprem-agent", "onprem", now=clock.now())
    mover = _submit(store, "true", queue="movers")
    waiter = _submit(store, "true")  # queue burst: agent_down wait (the default)
    store.schedule(now=clock.now())
    assert store.get_job(mover.id).site == store.get_job(waiter.id).site == "onprem"
    # The onprem agent goes silent; the cloud's is alive.
    clock.advance(RUNNER_SEEN_WITHIN + timedelta(seconds=1))
    store.runner_seen("cloud-agent", "cloud", now=clock.now())
    store.schedule(now=clock.now())
    moved = store.get_job(mover.id)
    assert (moved.state, moved.site) == ("placed", "cloud")
    requeued = [e for e in store.timeline(mover.id) if e.kind == "requeued"]
    assert len(requeued) == 1 and "no agent at onprem" in requeued[0].detail
    assert "moving on" in requeued[0].detail
    waiting = store.get_job(waiter.id)
    assert (waiting.state, waiting.site) == ("placed", "onprem")
    last = store.timeline(waiter.id)[-1]
    assert last.kind == "waiting for agent"
    assert "no agent at onprem" in last.detail and "lakecache agent --site onprem" in last.detail
    store.schedule(now=clock.now())
    kinds = [e.kind for e in store.timeline(waiter.id)]
    assert kinds.count("waiting for agent") == 1  # said once, not at every pass


# -- a backend that refuses --------------------------------------------------------------


def _pool(hub: Hub, store: ComputeStore, backend: str, config: dict[str, object]) -> str:
    now = SystemClock().now()
    Topology(hub.catalog).add_compute(f"onprem-{backend}", "onprem", backend, config, [], now)
    store.set_capacity(f"onprem-{backend}", Resources(2000, 4 * 10**9))
    store.add_template(f"{backend}-small", f"onprem-{backend}", ONE_CPU, "busybox", now)
    store.add_queue(f"{backend}-q", [f"{backend}-small"], now=now)
    return f"{backend}-q"


def test_a_ray_cluster_that_is_down_fails_the_job_with_rays_message(
    hub: Hub, store: ComputeStore, onprem: JobRunner
) -> None:
    queue = _pool(hub, store, "ray", {"address": "127.0.0.1:9", "connect_timeout": 1.0})
    t0 = time.monotonic()
    job = _until_done(onprem, store, _submit(store, "true", queue=queue).id)
    assert job.state == "failed"
    assert job.reason is not None
    assert job.reason.startswith("ray: the Ray cluster at 127.0.0.1:9 cannot be reached")
    assert time.monotonic() - t0 < 20
    assert [c.jobs for c in store.capacity() if c.compute == "onprem-ray"] == [0]
