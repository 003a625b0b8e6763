"""Batch dispatch: the ready tasks of a pass are announced, submitted in one batch and
recorded; an advancer killed between the submit and the record leaves no task to run
twice; a job the batch refuses fails its task alone."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import select

from lakecache.compute import tables as ct
from lakecache.compute.model import Resources
from lakecache.flows import FlowSpec
from lakecache.flows.store import JOB_KEY_ENV, TaskMove, job_key

from .conftest import FlowWorld

#: An advancer that submits its pass's jobs, then is killed (SIGKILL) before it can
#: record them on their tasks: the window the job keys close.
_KILLED_ADVANCER = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import timedelta
    from lakecache.data.hub import Hub
    from lakecache.flows.engine import FlowEngine
    from lakecache.settings import Settings

    settings = Settings(home=sys.argv[1], catalog_url=sys.argv[2], lake_url=sys.argv[3])
    hub = Hub(settings, remote=False)
    engine = FlowEngine(hub, lease=timedelta(seconds=1))
    submit_many = engine.jobs.submit_many

    def submit_then_die(*args, **kwargs):
        submit_many(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    engine.jobs.submit_many = submit_then_die
    engine.advance(int(sys.argv[4]))
    """
)


def _flow_jobs(world: FlowWorld, run_id: int) -> list[tuple[int, str]]:
    """(job id, job key) of every job submitted for run ``run_id``."""
    j = ct.compute_jobs
    with world.hub.catalog._read() as conn:
        rows = conn.execute(select(j.c.id, j.c.env).order_by(j.c.id)).all()
    out = []
    for job_id, env in rows:
        env = json.loads(env)
        if env.get("LAKECACHE_FLOW_RUN") == str(run_id):
            out.append((int(job_id), env[JOB_KEY_ENV]))
    return out


def test_an_advancer_killed_between_submit_and_record_runs_no_task_twice(
    world: FlowWorld,
) -> None:
    ran = world.tmp / "ran"
    flow = FlowSpec("orphans")
    flow.task(
        "work",
        command=f"echo {{params.i}} >> {ran}",
        queue="q",
        params={"i": [1, 2, 3, 4]},
    )
    run_id = world.engine.start(flow, advance=False)
    settings = world.hub.settings
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _KILLED_ADVANCER,
            str(settings.home),
            settings.catalog_url,
            settings.lake_url,
            str(run_id),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    # It died with every task announced and every job submitted, none recorded.
    tasks = world.engine.store.tasks(run_id)
    assert [(t.state, t.job_id, t.jobs) for t in tasks] == [("running", None, ())] * 4
    submitted = _flow_jobs(world, run_id)
    assert sorted(key for _, key in submitted) == sorted(job_key(run_id, t.id, 0) for t in tasks)

    # The next advancer (after the dead one's lease) finds the jobs by their keys.
    time.sleep(1.2)
    assert world.engine.advance(run_id)
    tasks = world.engine.store.tasks(run_id)
    assert _flow_jobs(world, run_id) == submitted  # nothing submitted again
    by_key = {key: job_id for job_id, key in submitted}
    for t in tasks:
        assert t.state == "running"
        assert t.job_id == by_key[job_key(run_id, t.id, 0)]
        assert t.jobs == (t.job_id,)
        assert t.tries == 1

    runner = world.runner()
    thread = threading.Thread(target=runner.run_forever, daemon=True)
    thread.start()
    try:
        run = world.engine.wait(run_id, timeout=120)
    finally:
        runner.stop_event.set()
        thread.join(timeout=60)
    assert run.state == "succeeded", run.reason
    assert Counter(ran.read_text().split()) == Counter({"1": 1, "2": 1, "3": 1, "4": 1})
    assert len(_flow_jobs(world, run_id)) == 4


def test_a_task_announced_but_never_submitted_is_submitted_once(world: FlowWorld) -> None:
    """The advancer died after announcing, before its batch: no job to find, so the next
    pass submits one per task, under the same keys."""
    flow = FlowSpec("announced")
    flow.task("a", command="true", queue="q", params={"i": [1, 2]})
    run_id = world.engine.start(flow, advance=False)
    engine = world.engine
    tasks = engine.store.tasks(run_id)
    moved = engine.store.move_many(
        [
            TaskMove(t, ("pending",), {"state": "running", "job_id": None, "tries": 1}, False)
            for t in tasks
        ]
    )
    assert all(m is not None for m in moved)
    assert _flow_jobs(world, run_id) == []
    assert engine.advance(run_id)
    jobs = _flow_jobs(world, run_id)
    assert sorted(key for _, key in jobs) == sorted(job_key(run_id, t.id, 0) for t in tasks)
    tasks = engine.store.tasks(run_id)
    assert sorted(t.job_id or 0 for t in tasks) == sorted(job_id for job_id, _ in jobs)
    assert engine.advance(run_id)  # a second pass submits nothing more
    assert len(_flow_jobs(world, run_id)) == 2


def test_cancel_stops_the_job_of_a_task_announced_without_it(world: FlowWorld) -> None:
    flow = FlowSpec("cancelled")
    flow.task("a", command="sleep 60", queue="q")
    run_id = world.engine.start(flow, advance=False)
    settings = world.hub.settings
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _KILLED_ADVANCER,
            str(settings.home),
            settings.catalog_url,
            settings.lake_url,
            str(run_id),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    ((job_id, _),) = _flow_jobs(world, run_id)
    assert world.store.get_job(job_id).state == "queued"
    run = world.engine.cancel(run_id)
    assert run.state == "cancelled"
    assert world.store.get_job(job_id).state == "cancelled"


def test_a_job_the_batch_refuses_fails_its_task_alone(world: FlowWorld) -> None:
    flow = FlowSpec("refused")
    flow.task("small", command="true", queue="q", params={"i": [1, 2]})
    # The queue's one template has 1 core: a job asking for 64 would wait forever.
    flow.task("huge", command="true", queue="q", cpu=64)
    run_id = world.engine.start(flow)
    tasks = {t.name: t for t in world.engine.store.tasks(run_id)}
    assert tasks["huge"].state == "failed"
    assert "larger than every template" in (tasks["huge"].reason or "")
    assert [tasks[n].state for n in ("small[i=1]", "small[i=2]")] == ["running", "running"]
    assert all(tasks[n].job_id for n in ("small[i=1]", "small[i=2]"))
    assert len(_flow_jobs(world, run_id)) == 2


def test_a_job_planted_under_a_task_key_by_another_user_is_never_adopted(
    world: FlowWorld,
) -> None:
    """Job keys are predictable: a job another user submits with a task's key must not
    become that task's job when a pass looks for jobs submitted before it."""
    flow = FlowSpec("planted")
    flow.task("a", command="true", queue="q")
    run_id = world.engine.start(flow, advance=False)
    engine = world.engine
    (task,) = engine.store.tasks(run_id)
    planted = world.store.submit(
        "q",
        ["true"],
        request=Resources(1000, 10**8),
        env={JOB_KEY_ENV: job_key(run_id, task.id, 0), "LAKECACHE_FLOW_RUN": str(run_id)},
        submitted_by="mallory",
        now=datetime.now(UTC),
    )
    moved = engine.store.move_many(
        [TaskMove(task, ("pending",), {"state": "running", "job_id": None, "tries": 1}, False)]
    )
    assert moved[0] is not None
    assert engine.advance(run_id)
    (task,) = engine.store.tasks(run_id)
    assert task.job_id is not None and task.job_id != planted.id
    assert world.store.get_job(task.job_id).submitted_by != "mallory"
