"""A job run by a remote site agent through the server: its run is made by the agent, the
job logs into it with its own job token, and nobody's credentials reach the job's run."""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from server.live import PASSWORD, World, build_world

from lakecache.cache.clock import SystemClock
from lakecache.cache.service import CacheService
from lakecache.client.jobs import RemoteJobs
from lakecache.compute.model import Resources
from lakecache.compute.runner import JobRunner
from lakecache.compute.sdk import jobs_store, submit
from lakecache.data.hub import Hub
from lakecache.settings import Settings
from lakecache.tracking import objects
from lakecache.tracking.store import TrackingStore

GB = 10**9
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("remote-tracking")
    w = build_world(base / "home", base / "src")
    yield w
    w.server.stop()
    w.plane.close()


def _settings(world: World, home: Path, token: str) -> Settings:
    return Settings(home=home, server_url=world.url, token=token, workers=4)


@pytest.fixture
def runner(world: World, tmp_path: Path) -> Iterator[JobRunner]:
    admin = Hub(_settings(world, tmp_path / "admin", world.tokens["admin"]))
    try:
        topo = CacheService(admin).topology
        topo.add_site("trk", "a site for tracking")
        (tmp_path / "vol").mkdir()
        topo.add_volume("trk-vol", "trk", str(tmp_path / "vol"), 10 * GB, 86400)
        topo.add_compute("trk-pool", "trk", "local", {}, [])
        store = jobs_store(admin)
        assert isinstance(store, RemoteJobs)
        now = SystemClock().now()
        store.set_capacity("trk-pool", Resources(2000, 4 * GB))
        store.add_template("trk-small", "trk-pool", Resources(1000, GB), None, now)
        store.add_queue("trk-q", ["trk-small"], now=now)
    finally:
        admin.close()
    plane = world.plane
    now = plane.clock.now()
    plane.accounts.create_user("agent-trk", PASSWORD, agent_site="trk", now=now)
    _, token = plane.accounts.create_token("agent-trk", "site", now=now, expires_at=None)
    hub = Hub(_settings(world, tmp_path / "agent", token))
    r = JobRunner(
        CacheService(hub, clock=SystemClock(), poll_every=0.05),
        "trk",
        interval=0.05,
        heartbeat_every=0.2,
        jobs_root=tmp_path / "jobs",
    )
    thread = threading.Thread(target=r.run_forever, daemon=True)
    thread.start()
    yield r
    r.stop_event.set()
    thread.join(timeout=60)
    hub.close()


def test_a_remote_job_is_tracked_and_logs_with_its_own_token(
    world: World, runner: JobRunner, tmp_path: Path
) -> None:
    code = textwrap.dedent(
        """
        import math, pathlib, time
        import lakecache.tracking as tracking
        run = tracking.current()
        run.log_params({"depth": 50})
        for step in range(300):
            run.log_metric("loss", 1 / (step + 1), step=step)
        run.log_metric("nan", math.nan)
        pathlib.Path("best.txt").write_text("best")
        run.log_artifact("best.txt")
        print("training done", flush=True)
        time.sleep(2.5)
        """
    )
    hub = Hub(_settings(world, tmp_path / "rita", world.tokens["rita"]))
    try:
        job = submit(
            [sys.executable, "-c", code],
            queue="trk-q",
            inputs=["xray@v1:cached"],
            env={"PYTHONPATH": str(SRC), "LAKECACHE_EXPERIMENT": "remote"},
            hub=hub,
        )
        final = job.wait(timeout=180)
        assert final.state == "succeeded", final.reason
    finally:
        hub.close()
    store = TrackingStore(world.plane.hub.catalog)
    deadline = time.monotonic() + 30
    while not (runs := store.runs_of_job(job.id)) or runs[0].status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (run,) = runs
    assert (run.user, run.experiment, run.status, run.exit_code) == (
        "rita",
        "remote",
        "finished",
        0,
    )
    assert run.env["python"] and "httpx" in run.env["packages"]  # read while the job ran
    assert store.run_params(run.id) == {"depth": "50"}
    assert store.metric_series(run.id, "loss").points_total == 300
    assert [a.path for a in store.list_artifacts(run.id)] == ["best.txt"]
    (read,) = store.run_inputs(run.id)
    assert (read.dataset, read.source, read.hit) == ("xray", "cache", False)
    lake = world.plane.hub.lake
    assert b"training done" in objects.read_log(store, lake, run.id, "output")
    assert "cpu_percent" in store.system_metric_keys(run.id)
    # rita sees her job's run over the API; nora does not.
    assert world.call("rita", "GET", f"/api/v1/tracking/runs/{run.id}").status_code == 200
    assert world.call("nora", "GET", f"/api/v1/tracking/runs/{run.id}").status_code == 404
