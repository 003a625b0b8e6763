"""Jobs end to end: real processes started by a site's runner, real caches, real catalog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import World
from helpers import make_files

from lakecache.cache.clock import SystemClock
from lakecache.cache.service import CacheService
from lakecache.catalog.topology import Topology
from lakecache.compute.model import InputSpec, JobRecord, Resources
from lakecache.compute.runner import JobRunner
from lakecache.compute.store import ComputeStore
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.settings import Settings

ONE_CPU = Resources(1000, 10**9)
SRC = Path(__file__).resolve().parents[2] / "src"


def _runner(hub: Hub, site: str, tmp_path: Path, **kw: object) -> JobRunner:
    caches = CacheService(hub, clock=SystemClock(), poll_every=0.05)
    return JobRunner(
        caches,
        site,
        interval=0.05,
        heartbeat_every=0.2,
        jobs_root=tmp_path / f"jobs-{site}",
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def onprem(hub: Hub, world: World, tmp_path: Path) -> Iterator[JobRunner]:
    runner = _runner(hub, "onprem", tmp_path)
    yield runner
    runner.close()


def _submit(store: ComputeStore, *command: str, **kw: object) -> JobRecord:
    return store.submit(
        str(kw.pop("queue", "burst")),
        command,
        request=ONE_CPU,
        submitted_by="tester",
        now=SystemClock().now(),
        **kw,  # type: ignore[arg-type]
    )


def _until(runner: JobRunner, store: ComputeStore, job_id: int, *states: str) -> JobRecord:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runner.run_once()
        job = store.get_job(job_id)
        if job.state in states:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} is {store.get_job(job_id).state}, not {states}")


@pytest.fixture
def xray(hub: Hub, tmp_path: Path) -> Dataset:
    ds = Dataset.create("xray", hub=hub)
    ds.commit(make_files(tmp_path / "src", n=9, size=1000), message="v1")
    ds.tag("v1")
    return ds


def test_a_job_reads_its_cached_input_under_a_lease_and_writes_outputs(
    hub: Hub, store: ComputeStore, onprem: JobRunner, xray: Dataset
) -> None:
    commit = hub.catalog.resolve("xray", "v1")
    spec = InputSpec("xray", "xray", "v1", commit, "cached")
    job = _submit(
        store,
        "sh",
        "-c",
        'ls -R "$LAKECACHE_INPUT_XRAY" | grep -c png > "$LAKECACHE_OUTPUTS/count";'
        " echo said-out; echo said-err >&2; sleep 1",
        inputs=[spec],
    )
    job = _until(onprem, store, job.id, "running")
    topology = Topology(hub.catalog)
    deadline = time.monotonic() + 30
    while "started" not in [e.kind for e in store.timeline(job.id)]:
        assert time.monotonic() < deadline and store.get_job(job.id).state == "running"
        time.sleep(0.02)
    (cache,) = topology.list_caches(site="onprem", now=SystemClock().now())
    assert (cache.state, cache.leases) == ("ready", 1)  # held while the job runs
    job = _until(onprem, store, job.id, "succeeded", "failed")
    assert (job.state, job.exit_code) == ("succeeded", 0), job.reason
    assert job.workdir is not None
    assert (Path(job.workdir) / "outputs" / "count").read_text().strip() == "9"
    log = (Path(job.workdir) / "job.log").read_text()
    assert "said-out" in log and "said-err" in log
    kinds = [e.kind for e in store.timeline(job.id)]
    assert kinds == [
        "queued",
        "placed",
        "claimed",
        "preparing",
        "data ready",
        "started",
        "outputs",
        "succeeded",
    ]
    (collected,) = store.outputs(job.id)
    assert (collected.path, collected.size) == ("count", 2)
    assert job.outputs_files == 1 and job.outputs_manifest is not None
    ready = next(e for e in store.timeline(job.id) if e.kind == "data ready")
    assert "(cached)" in ready.detail and "leased" in ready.detail
    assert topology.list_caches(site="onprem", now=SystemClock().now())[0].leases == 0


def test_a_streamed_input_is_pulled_for_the_job_alone_and_removed_after(
    hub: Hub, store: ComputeStore, onprem: JobRunner, xray: Dataset
) -> None:
    commit = hub.catalog.resolve("xray", "v1")
    spec = InputSpec("xray", "xray", "v1", commit, "stream")
    job = _submit(
        store, "sh", "-c", 'find "$LAKECACHE_INPUT_XRAY" -name "*.png" | wc -l', inputs=[spec]
    )
    job = _until(onprem, store, job.id, "succeeded", "failed")
    assert job.state == "succeeded", job.reason
    assert job.workdir is not None
    assert (Path(job.workdir) / "job.log").read_text().strip() == "9"
    assert not (Path(job.workdir) / "inputs" / "xray").exists()
    assert Topology(hub.catalog).list_caches() == []  # no cache made for a streamed input


def test_a_command_that_does_not_exist_fails_the_job_with_the_reason(
    store: ComputeStore, onprem: JobRunner
) -> None:
    job = _submit(store, "no-such-program-here", "--flag")
    job = _until(onprem, store, job.id, "succeeded", "failed")
    assert job.state == "failed"
    assert job.reason == "local: command not found: 'no-such-program-here'"
    assert store.capacity()[1].jobs == 0  # its slot is free again


def test_a_failing_command_reports_its_exit_code(store: ComputeStore, onprem: JobRunner) -> None:
    job = _until(onprem, store, _submit(store, "sh", "-c", "exit 7").id, "succeeded", "failed")
    assert (job.state, job.exit_code, job.reason) == ("failed", 7, "exit code 7")


def test_cancel_stops_a_running_job(store: ComputeStore, onprem: JobRunner) -> None:
    job = _submit(store, "sleep", "60")
    _until(onprem, store, job.id, "running")
    time.sleep(0.3)
    store.cancel(job.id, now=SystemClock().now())
    t0 = time.monotonic()
    job = _until(onprem, store, job.id, "cancelled", "failed", "succeeded")
    assert job.state == "cancelled" and time.monotonic() - t0 < 10
    assert onprem.wait_idle(5)


def test_a_full_onprem_site_bursts_the_next_job_to_the_cloud_at_once(
    hub: Hub, store: ComputeStore, world: World, tmp_path: Path
) -> None:
    # The figure (fallback under 1 s) is measured by the bench (compute.fallback); here,
    # the order of what happens: placed at the cloud at submit, never waiting, and running
    # there while both onprem slots are still held. Each runner waits a minute between
    # polls: only the doorbell (a job queued, placed or ended) can start it this soon.
    runners = [_runner(hub, site, tmp_path) for site in ("onprem", "cloud")]
    for r in runners:
        r.interval = 60.0
    threads = [threading.Thread(target=r.run_forever, daemon=True) for r in runners]
    for t in threads:
        t.start()
    try:
        long = [_submit(store, "sleep", "30") for _ in range(2)]
        for j in long:
            store.admit(j.id, now=SystemClock().now())
        for j in long:
            _wait_state(store, j.id, "running")
        where = {j.id: (store.get_job(j.id).site, store.timeline(j.id)) for j in long}
        assert {site for site, _ in where.values()} == {"onprem"}, where
        t0 = time.monotonic()
        burst = _submit(store, "sleep", "30")
        store.admit(burst.id, now=SystemClock().now())  # as lakecache.submit does
        job = _wait_state(store, burst.id, "running")
        assert time.monotonic() - t0 < 30, "started by a poll, not by the doorbell"
        assert (job.state, job.site) == ("running", "cloud")
        assert [v.verdict for v in job.placement] == ["full", "chosen"]
        kinds = [e.kind for e in store.timeline(burst.id)]
        assert kinds[:4] == ["queued", "placed", "claimed", "preparing"]
        assert "waiting" not in kinds
        assert all(store.get_job(j.id).state == "running" for j in long)
    finally:
        for j in store.list_jobs(states=("queued", "placed", "running")):
            store.cancel(j.id, now=SystemClock().now())
        for r in runners:
            r.stop_event.set()
        for t in threads:
            t.join(30)


def _wait_state(store: ComputeStore, job_id: int, state: str, timeout: float = 30) -> JobRecord:
    deadline = time.monotonic() + timeout
    while (job := store.get_job(job_id)).state != state and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.state == state, f"job {job_id} is {job.state}, not {state}"
    return job


_AGENT = """
import sys
from datetime import timedelta
from pathlib import Path
from lakecache.cache.clock import SystemClock
from lakecache.cache.service import CacheService
from lakecache.compute.runner import JobRunner
from lakecache.data.hub import Hub
from lakecache.settings import Settings
home, catalog, jobs = sys.argv[1:4]
hub = Hub(Settings(home=Path(home), catalog_url=catalog, author="agent"), remote=False)
runner = JobRunner(CacheService(hub, clock=SystemClock()), "onprem", interval=0.05,
                   heartbeat_every=0.2, jobs_root=Path(jobs), worker="doomed-agent")
runner.run_forever()
"""


def test_an_agent_killed_mid_job_is_requeued_and_never_runs_twice_at_once(
    compute_settings: Settings, hub: Hub, store: ComputeStore, world: World, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    # Each run appends "start <attempt> <time>" and, 2 s later, "end <attempt> <time>".
    script = (
        f'echo "start $LAKECACHE_JOB_ATTEMPT $(date +%s.%N)" >> {marks}; sleep 2; '
        f'echo "end $LAKECACHE_JOB_ATTEMPT $(date +%s.%N)" >> {marks}'
    )
    job = _submit(store, "sh", "-c", script)
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _AGENT,
            str(compute_settings.home),
            compute_settings.catalog_url,
            str(tmp_path / "doomed"),
        ],
        env={"PYTHONPATH": str(SRC), "PATH": os.environ["PATH"]},
    )
    try:
        deadline = time.monotonic() + 30
        while not (marks.exists() and marks.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.get_job(job.id).worker == "doomed-agent"
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait()
    survivor = _runner(hub, "onprem", tmp_path, stale_after=timedelta(seconds=1))
    try:
        done = _until(survivor, store, job.id, "succeeded", "failed")
    finally:
        survivor.close()
    assert (done.state, done.attempt) == ("succeeded", 2), done.reason
    lines = [line.split() for line in marks.read_text().splitlines()]
    assert [(kind, attempt) for kind, attempt, _ in lines] == [
        ("start", "1"),
        ("start", "2"),
        ("end", "2"),
    ]  # the first run died with its agent and never finished
    kinds = [(e.kind, e.attempt) for e in store.timeline(job.id)]
    assert ("requeued", 1) in kinds
    assert "doomed-agent silent" in next(
        e.detail for e in store.timeline(job.id) if e.kind == "requeued"
    )


def test_a_stopping_agent_gives_its_jobs_back(
    hub: Hub, store: ComputeStore, world: World, tmp_path: Path
) -> None:
    runner = _runner(hub, "onprem", tmp_path)
    job = _submit(store, "sleep", "60")
    _until(runner, store, job.id, "running")
    time.sleep(0.3)
    runner.close()
    job = store.get_job(job.id)
    assert (job.state, job.attempt) in {("queued", 1), ("placed", 1)}
    assert store.timeline(job.id)[-1].kind in ("requeued", "placed")


def test_a_runner_checks_for_silent_workers_and_deadlines_at_most_every_second(
    hub: Hub, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of short jobs runs a pass every few jobs: the checks of time (silent
    workers, pending deadlines, agents down) run once a second by the runner's clock,
    not at every pass; the admission runs at every pass."""
    from lakecache.cache.clock import ManualClock

    clock = ManualClock()
    caches = CacheService(hub, clock=clock, poll_every=0.05)
    runner = JobRunner(caches, "onprem", interval=0.05, jobs_root=tmp_path / "jobs")
    calls: list[str] = []
    for name in ("requeue_stale", "fail_overdue", "strand_check", "_admit"):
        real = getattr(runner.store, name)

        def counted(*a: object, _real: object = real, _name: str = name, **k: object) -> object:
            calls.append(_name)
            return _real(*a, **k)  # type: ignore[operator]

        monkeypatch.setattr(runner.store, name, counted)
    checks = ["requeue_stale", "fail_overdue", "strand_check"]
    try:
        _submit(runner.store, "sleep", "30")  # queued: every pass admits
        runner.run_once()
        assert calls == [*checks, "_admit"]
        calls.clear()
        clock.advance(timedelta(milliseconds=900))
        runner.run_once()
        assert calls == []  # its own job placed and running: nothing queued, no check due
        _submit(runner.store, "sleep", "30")
        runner.run_once()
        assert calls == ["_admit"]
        calls.clear()
        clock.advance(timedelta(milliseconds=200))  # a second since the last checks
        runner.run_once()
        assert calls == [*checks]
    finally:
        runner.close()
