"""Flows when things go wrong: failing tasks, retries, timeouts, cancel and resume."""

from __future__ import annotations

from pathlib import Path

from lakecache.compute.runner import JobRunner
from lakecache.flows import FlowSpec

from .conftest import FlowWorld


def _flow(tmp: Path, marker: Path) -> FlowSpec:
    """a -> bad -> after_bad; a -> good (independent of bad). ``bad`` fails until
    ``marker`` exists, counting its tries in ``marker.tries``."""
    flow = FlowSpec("faults")
    flow.task("a", command="true", queue="q")
    bad = f"echo x >> {marker}.tries; test -e {marker} || {{ echo 'bad data' >&2; exit 3; }}"
    flow.task("bad", command=bad, queue="q", after=["a"], retries=1)
    flow.task("after_bad", command="true", queue="q", after=["bad"])
    flow.task("good", command="sleep 0.5", queue="q", after=["a"])
    return flow


def test_failing_task_is_retried_then_fails_the_flow_while_the_other_branch_finishes(
    world: FlowWorld, running: JobRunner
) -> None:
    marker = world.tmp / "fixed"
    engine = world.engine
    run_id = engine.start(_flow(world.tmp, marker))
    run = engine.wait(run_id, timeout=120)
    tasks = {t.name: t for t in engine.store.tasks(run_id)}
    assert run.state == "failed"
    assert "bad" in (run.reason or "") and "exit code 3" in (run.reason or "")
    assert tasks["bad"].state == "failed" and tasks["bad"].tries == 2  # 1 retry
    assert len(tasks["bad"].jobs) == 2
    assert len(Path(f"{marker}.tries").read_text().split()) == 2
    assert tasks["good"].state == "succeeded"  # the independent branch finished
    assert tasks["after_bad"].state == "skipped"
    assert tasks["after_bad"].reason == "upstream bad failed"
    assert tasks["after_bad"].job_id is None

    # Resume: only bad (fixed now) and what depends on it run again; a and good are kept.
    marker.write_text("fixed")
    kept = {n: tasks[n].job_id for n in ("a", "good")}
    engine.resume(run_id)
    run = engine.wait(run_id, timeout=120)
    again = {t.name: t for t in engine.store.tasks(run_id)}
    assert run.state == "succeeded", [(t.name, t.state, t.reason) for t in again.values()]
    assert {n: again[n].job_id for n in ("a", "good")} == kept
    assert len(again["bad"].jobs) == 3 and again["after_bad"].job_id is not None


def test_a_task_past_its_timeout_is_stopped_and_fails(world: FlowWorld, running: JobRunner) -> None:
    flow = FlowSpec("slow")
    flow.task("sleepy", command="sleep 60", queue="q", timeout=1)
    run = world.engine.wait(world.engine.start(flow), timeout=120)
    (task,) = world.engine.store.tasks(run.id)
    assert run.state == "failed" and task.state == "failed"
    assert task.reason is not None and task.reason.endswith("timed out after 1 s")
    assert task.seconds is not None and task.seconds < 30
    job = world.store.get_job(task.jobs[-1])
    assert job.state == "failed" and job.timeout_seconds == 1  # stopped by the job layer


def test_cancel_stops_running_jobs_and_pending_tasks(world: FlowWorld, running: JobRunner) -> None:
    flow = FlowSpec("long")
    flow.task("first", command="sleep 60", queue="q")
    flow.task("second", command="true", queue="q", after=["first"])
    engine = world.engine
    run_id = engine.start(flow)
    import time

    deadline = time.monotonic() + 60
    while world.store.get_job(engine.store.tasks(run_id)[0].job_id or 0).state != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    run = engine.cancel(run_id)
    assert run.state == "cancelled"
    tasks = {t.name: t for t in engine.store.tasks(run_id)}
    assert tasks["first"].state == "cancelled" and tasks["second"].state == "cancelled"
    job_id = tasks["first"].job_id or 0
    while world.store.get_job(job_id).state != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not engine.advance(run_id)  # an ended run stays ended
