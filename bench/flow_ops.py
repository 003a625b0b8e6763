"""Flows: planning and dispatch cost of the flow engine, on the embedded default catalog.

Each measure runs in a child process of its own (so peak memory is the flow's, plus
the interpreter and lakecache it imports), on a fresh home in the work dir:

* ``plan-10k``: a 10,000-task flow checked and planned against the catalog (its
  queue and dataset input resolved there): once as a fan-out (a 100 x 100 grid of
  params on one task), once as 10,000 distinct tasks in Python, each after an
  earlier one. Wall time of check + plan, and the child's peak RSS.
* ``dispatch-1k``: a 1,000-task fan-out flow started and advanced until every task
  has its job submitted to the queue: the time from ``start`` to the last dispatch,
  and each task's orchestration overhead (memo check, inputs, job submit, the task's
  own transition), p50 and p99. A pass dispatches its ready tasks as one batch (three
  transactions whatever their number), so a task's overhead is its batch's time over
  the tasks in it.

Beside each wall time, the child's CPU time for the same work, and the machine's load
average: on a shared machine the wall time also counts the waits for a CPU.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness import REPO, Bench, BenchError, say, timed

TASKS_PLAN = 10_000
TASKS_DISPATCH = 1_000


def flows(bench: Bench) -> None:
    """Plan a 10,000-task flow two ways; start and dispatch a 1,000-task fan-out."""
    bench.notes.append(
        f"flows: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start "
        "(the CPU-time figures beside the wall times are what the load cannot stretch)"
    )
    for shape in ("fanout", "distinct"):
        say(f"flows: check and plan {TASKS_PLAN:,} tasks ({shape})")
        run, out = _child(bench, "plan", shape=shape, tasks=TASKS_PLAN)
        if out["tasks"] != TASKS_PLAN:
            raise BenchError(f"the plan has {out['tasks']} tasks, not {TASKS_PLAN}")
        bench.record(
            f"flows.plan_{shape}.s", out["plan_s"], "s", f"check + plan {TASKS_PLAN:,} ({shape})"
        )
        bench.record(f"flows.plan_{shape}.cpu_s", out["plan_cpu_s"], "s", f"of which CPU ({shape})")
        bench.record(
            f"flows.plan_{shape}.peak_mib",
            run.peak_mib,
            "MiB",
            f"peak RSS, check + plan {TASKS_PLAN:,} ({shape})",
        )
    say(f"flows: start and dispatch a {TASKS_DISPATCH:,}-task fan-out")
    _, out = _child(bench, "dispatch", tasks=TASKS_DISPATCH)
    if out["dispatched"] != TASKS_DISPATCH:
        raise BenchError(f"{out['dispatched']} of {TASKS_DISPATCH} tasks were dispatched")
    bench.record(
        "flows.dispatch_1k.s", out["total_s"], "s", "1,000-task fan-out planned+dispatched"
    )
    bench.record("flows.dispatch_1k.cpu_s", out["cpu_s"], "s", "of which CPU")
    bench.record("flows.dispatch_1k.p50_ms", out["p50_ms"], "ms", "orchestration per task (p50)")
    bench.record("flows.dispatch_1k.p99_ms", out["p99_ms"], "ms", "orchestration per task (p99)")


def _child(bench: Bench, op: str, **args: Any) -> tuple[Any, dict[str, Any]]:
    home = bench.scratch(f"flows-{op}-{args.get('shape', '')}")
    config = json.dumps({"home": str(home), **args})
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    run = timed([sys.executable, Path(__file__), op, config], env=env, cwd=REPO, check=False)
    if run.returncode != 0:
        raise BenchError(f"flows {op} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return run, json.loads(run.stdout.strip().splitlines()[-1])


def _world(hub: Any, home: Path) -> None:
    """A site with a local pool big enough for every job, queue ``q``, dataset xray@v1."""
    from lakecache.cache.clock import SystemClock
    from lakecache.catalog.topology import Topology
    from lakecache.compute.model import Resources
    from lakecache.compute.store import ComputeStore
    from lakecache.data.dataset import Dataset

    now = SystemClock().now()
    topology = Topology(hub.catalog)
    store = ComputeStore(hub.catalog)
    topology.add_site("onprem", "", now)
    topology.add_compute("pool", "onprem", "local", {}, [], now)
    store.set_capacity("pool", Resources(10**9, 10**15))
    store.add_template("small", "pool", Resources(1000, 10**9), None, now)
    store.add_queue("q", ["small"], now=now)
    src = home / "xray"
    src.mkdir()
    (src / "a.txt").write_text("a")
    Dataset.create("xray", hub=hub).commit(src, "v1")
    Dataset("xray", hub=hub).tag("v1")


def _flow(shape: str, tasks: int) -> Any:
    from lakecache.flows import FlowSpec

    flow = FlowSpec("bench")
    inputs = {"xray": {"dataset": "xray@v1"}}
    if shape == "fanout":
        side = int(tasks**0.5)
        flow.task(
            "train",
            command="train --lr {params.lr} --depth {params.depth}",
            queue="q",
            params={"lr": list(range(side)), "depth": list(range(tasks // side))},
            inputs=inputs,
        )
    elif shape == "distinct":
        for i in range(tasks):
            after = [f"t{(i * 7919 + 13) % i}"] if i else []
            flow.task(f"t{i}", command=f"step {i}", queue="q", after=after, inputs=inputs)
    else:  # dispatch: one task fanned out over ``tasks`` values
        flow.task("train", command="true", queue="q", params={"i": list(range(tasks))})
    return flow


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _child_main(op: str, config_json: str) -> None:
    from lakecache.data.hub import Hub
    from lakecache.flows.engine import FlowEngine
    from lakecache.settings import Settings

    config = json.loads(config_json)
    home = Path(config["home"])
    hub = Hub(Settings(home=home / "home", author="bench"), remote=False)
    try:
        _world(hub, home)
        engine = FlowEngine(hub)
        if op == "plan":
            flow = _flow(config["shape"], config["tasks"])
            t, cpu = time.perf_counter(), time.process_time()
            plan = engine.plan(flow)
            result: dict[str, Any] = {
                "plan_s": time.perf_counter() - t,
                "plan_cpu_s": time.process_time() - cpu,
                "tasks": len(plan.tasks),
            }
        elif op == "dispatch":
            flow = _flow("dispatch", config["tasks"])
            t, cpu = time.perf_counter(), time.process_time()
            run_id = engine.start(flow)
            while any(x.state == "pending" for x in engine.store.tasks(run_id)):
                engine.advance(run_id)
            total = time.perf_counter() - t
            cpu_s = time.process_time() - cpu
            tasks = engine.store.tasks(run_id)
            per_task = [s * 1000 for s in engine.dispatch_seconds]
            result = {
                "total_s": total,
                "cpu_s": cpu_s,
                "dispatched": sum(1 for x in tasks if x.job_id is not None),
                "p50_ms": _percentile(per_task, 50),
                "p99_ms": _percentile(per_task, 99),
            }
        else:
            raise SystemExit(f"unknown op {op!r}")
        print(json.dumps(result))
    finally:
        hub.close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _child_main(sys.argv[1], sys.argv[2])
