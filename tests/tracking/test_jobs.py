"""A job's run, recorded without a line of tracking code, and a job that logs into it.

Real processes started by a site's runner (local backend), a real cache of a real
commit, the catalog on SQLite (and PostgreSQL, marked).
"""

from __future__ import annotations

import math
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakecache.cache.clock import SystemClock
from lakecache.cache.service import CacheService
from lakecache.catalog.topology import Topology
from lakecache.compute.model import InputSpec, JobRecord, Resources
from lakecache.compute.runner import JobRunner
from lakecache.compute.store import ComputeStore
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.settings import Settings
from lakecache.tracking import objects
from lakecache.tracking.store import TrackingStore

SRC = Path(__file__).resolve().parents[2] / "src"
GB = 10**9


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hub(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Hub]:
    if request.param == "postgres":
        settings = settings.with_(catalog_url=request.getfixturevalue("pg_url"))
    h = Hub(settings, remote=False)
    yield h
    h.close()


@pytest.fixture
def runner(hub: Hub, tmp_path: Path) -> Iterator[JobRunner]:
    now = SystemClock().now()
    topology = Topology(hub.catalog)
    topology.add_site("onprem", "", now)
    (tmp_path / "vol").mkdir()
    topology.add_volume("vol", "onprem", str(tmp_path / "vol"), 10 * GB, 86400, now)
    topology.add_compute("pool", "onprem", "local", {}, [], now)
    store = ComputeStore(hub.catalog)
    store.set_capacity("pool", Resources(2000, 16 * GB, 0))
    store.add_template("small", "pool", Resources(1000, GB), None, now)
    store.add_queue("q", ["small"], now=now)
    caches = CacheService(hub, clock=SystemClock(), poll_every=0.05)
    r = JobRunner(caches, "onprem", interval=0.05, heartbeat_every=0.2, jobs_root=tmp_path / "jobs")
    yield r
    r.close()


def _run_job(runner: JobRunner, job: JobRecord) -> JobRecord:
    store = ComputeStore(runner.caches.hub.catalog)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runner.run_once()
        got = store.get_job(job.id)
        if got.done:
            runner.wait_idle(60)
            return store.get_job(job.id)
        time.sleep(0.05)
    raise AssertionError(f"job {job.id} did not end")


def test_a_job_attempt_is_tracked_without_code_and_its_sdk_logs_into_its_run(
    hub: Hub, runner: JobRunner, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    for i in range(5):
        (src / "a").mkdir(parents=True, exist_ok=True)
        (src / "a" / f"{i}.bin").write_bytes(bytes([i]) * 1000)
    ds = Dataset.create("xray", hub=hub)
    ds.commit(src, message="v1")
    commit = hub.catalog.resolve("xray", None)
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import math, os, sys, time
            import lakecache.tracking as tracking
            run = tracking.current()
            run.log_params({"lr": 0.1})
            for step in range(50):
                run.log_metric("loss", 1.0 / (step + 1), step=step)
            run.log_metric("weird", math.nan)
            run.log_metric("weird", math.inf)
            open("model.bin", "wb").write(b"weights")
            run.log_artifact("model.bin", "ckpt/model.bin")
            print("said-out", flush=True)
            print("said-err", file=sys.stderr, flush=True)
            time.sleep(2.5)
            sys.exit(3)
            """
        )
    )
    job = ComputeStore(hub.catalog).submit(
        "q",
        [sys.executable, str(script)],
        request=Resources(1000, GB),
        inputs=[InputSpec("xray", "xray", "main", commit, "cached")],
        env={"PYTHONPATH": str(SRC), "LAKECACHE_EXPERIMENT": "xray-train"},
        submitted_by="alice",
        max_attempts=1,
        now=SystemClock().now(),
    )
    ended = _run_job(runner, job)
    assert (ended.state, ended.exit_code) == ("failed", 3)
    tracking = TrackingStore(hub.catalog)
    (run,) = tracking.runs_of_job(job.id)
    assert run.experiment == "xray-train" and run.user == "alice"
    assert run.status == "failed" and run.exit_code == 3 and run.duration_s is not None
    assert run.command == [sys.executable, str(script)]
    assert run.env["python"] == sys.version.split()[0] and "sqlalchemy" in run.env["packages"]
    assert run.job_attempt == 1
    (read,) = tracking.run_inputs(run.id)
    assert (read.dataset, read.commit_id, read.source, read.hit) == ("xray", commit, "cache", False)
    assert read.fill_seconds is not None and read.fill_seconds > 0
    # What the job logged itself (through the spool its runner drained).
    assert tracking.run_params(run.id) == {"lr": "0.1"}
    loss = tracking.metric_series(run.id, "loss")
    assert loss.steps == list(range(50)) and loss.values[-1] == pytest.approx(1 / 50)
    weird = tracking.metric_series(run.id, "weird")
    assert math.isnan(weird.values[0]) and weird.values[1] == math.inf
    (artifact,) = tracking.list_artifacts(run.id)
    assert artifact.path == "ckpt/model.bin"
    assert objects.read_artifact(tracking, hub.lake, run.id, "ckpt/model.bin") == b"weights"
    output = objects.read_log(tracking, hub.lake, run.id, "output")
    assert b"said-out" in output and b"said-err" in output
    assert "cpu_percent" in tracking.system_metric_keys(run.id)
    assert tracking.metric_series(run.id, "memory_used", system=True).points_total >= 1


def test_a_silent_job_is_tracked_without_opening_the_lake_and_one_that_prints_ships_it(
    hub: Hub, runner: JobRunner
) -> None:
    """Opening the lake costs seconds of CPU: an attempt that stores no output (most short
    jobs) never opens it; one that prints gets its output stored all the same."""
    store = ComputeStore(hub.catalog)
    tracking = TrackingStore(hub.catalog)

    def submit(*command: str) -> JobRecord:
        return store.submit(
            "q",
            list(command),
            request=Resources(1000, GB),
            submitted_by="alice",
            max_attempts=1,
            now=SystemClock().now(),
        )

    silent = _run_job(runner, submit("true"))
    assert (silent.state, silent.exit_code) == ("succeeded", 0)
    (run,) = tracking.runs_of_job(silent.id)
    assert run.status == "finished" and run.exit_code == 0
    assert hub._lake is None  # nothing of this attempt needed the lake

    loud = _run_job(runner, submit("sh", "-c", "echo said-out"))
    assert (loud.state, loud.exit_code) == ("succeeded", 0)
    (run,) = tracking.runs_of_job(loud.id)
    assert run.status == "finished"
    assert objects.read_log(tracking, hub.lake, run.id, "output") == b"said-out\n"


def test_trackers_writes_that_arrive_together_share_a_transaction_and_fail_alone(
    hub: Hub,
) -> None:
    """A burst of attempts starting or ending: their tracking writes share transactions;
    each caller still gets its own result once committed, and a write that fails fails
    only its own caller."""
    import threading

    from sqlalchemy import literal, select

    from lakecache.compute.together import GroupCommit

    together = GroupCommit()
    catalog = hub.catalog
    opened = []
    real_write = catalog._write

    def counting_write() -> object:
        opened.append(1)
        return real_write()

    catalog._write = counting_write  # type: ignore[method-assign]
    first_in = threading.Event()
    results: dict[int, object] = {}

    def step(i: int) -> object:
        def run(conn: object) -> object:
            if i == 0:
                first_in.set()
                time.sleep(0.3)  # the others queue meanwhile
            if i == 7:
                raise ValueError("bad write")
            return conn.execute(select(literal(i))).scalar()  # type: ignore[attr-defined]

        return run

    def call(i: int) -> None:
        try:
            results[i] = together.write(catalog, step(i))
        except ValueError as exc:
            results[i] = exc

    try:
        threads = [threading.Thread(target=call, args=(0,))]
        threads[0].start()
        assert first_in.wait(30)
        threads += [threading.Thread(target=call, args=(i,)) for i in range(1, 12)]
        for t in threads[1:]:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        del catalog._write
    assert {i: r for i, r in results.items() if i != 7} == {i: i for i in range(12) if i != 7}
    assert isinstance(results[7], ValueError)
    # 0 alone, then the 11 others in one (rolled back: 7 failed), then each alone: 13,
    # against 12 with one each; without the failing one it would have been 2.
    assert len(opened) <= 13
    opened.clear()
    together_ok = [threading.Thread(target=call, args=(i,)) for i in range(20, 30)]
    catalog._write = counting_write  # type: ignore[method-assign]
    try:
        first_in.clear()
        lead = threading.Thread(target=call, args=(0,))
        lead.start()
        assert first_in.wait(30)
        for t in together_ok:
            t.start()
        for t in [lead, *together_ok]:
            t.join(60)
    finally:
        del catalog._write
    assert [results[i] for i in range(20, 30)] == list(range(20, 30))
    assert len(opened) == 2  # the first alone, the ten that queued behind it in one
