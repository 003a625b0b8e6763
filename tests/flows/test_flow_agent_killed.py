"""An agent killed (SIGKILL) in the middle of a flow: its job is requeued by the jobs
layer, runs again on another agent, and the flow goes on to the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

from lakecache.flows import FlowSpec

from .conftest import FlowWorld


def test_the_flow_continues_after_its_agent_is_killed(world: FlowWorld) -> None:
    attempts = world.tmp / "attempts"
    flow = FlowSpec("killed")
    flow.task(
        "first",
        command=f'echo "$LAKECACHE_JOB_ATTEMPT" >> {attempts} && sleep 3 '
        '&& mkdir "$LAKECACHE_OUTPUTS/o" && echo ok > "$LAKECACHE_OUTPUTS/o/f"',
        queue="q",
        outputs=["o"],
    )
    flow.task(
        "second", command='cat "$LAKECACHE_INPUT_O/o/f"', queue="q", inputs={"o": {"task": "first"}}
    )
    engine = world.engine
    run_id = engine.start(flow)
    settings = world.hub.settings
    env = {
        **os.environ,
        "LAKECACHE_HOME": str(settings.home),
        "LAKECACHE_LAKE": settings.lake_url,
        "LAKECACHE_CATALOG": settings.catalog_url,
    }
    env.pop("LAKECACHE_SERVER", None)
    agent = subprocess.Popen(
        [sys.executable, "-m", "lakecache", "agent", "--site", "onprem", "--interval", "0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (attempts.exists() and attempts.read_text().strip()):
            assert time.monotonic() < deadline, "the agent never started the first task"
            assert agent.poll() is None
            time.sleep(0.05)
        first = engine.store.tasks(run_id)[0]
        assert first.state == "running"
        agent.send_signal(signal.SIGKILL)
        agent.wait()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    # Another agent of the site notices the silence, requeues the job and runs it again.
    runner = world.runner("r2", stale_after=timedelta(seconds=4))
    thread = threading.Thread(target=runner.run_forever, daemon=True)
    thread.start()
    try:
        run = engine.wait(run_id, timeout=120)
    finally:
        runner.stop_event.set()
        thread.join(timeout=60)
    tasks = {t.name: t for t in engine.store.tasks(run_id)}
    assert run.state == "succeeded", [(t.name, t.state, t.reason) for t in tasks.values()]
    job = world.store.get_job(tasks["first"].job_id or 0)
    assert job.attempt == 2 and len(tasks["first"].jobs) == 1  # requeued, not retried
    assert attempts.read_text().split() == ["1", "2"]
    kinds = [e.kind for e in world.store.timeline(job.id)]
    assert "requeued" in kinds
