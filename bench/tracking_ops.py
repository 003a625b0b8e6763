"""Tracking: what logging costs the training loop, and how fast it is stored.

Each measure runs in a child process of its own, on a fresh home (the embedded
default: SQLite catalog, local lake), with no server:

* ``log``: ``run.log_metric`` called 100,000 times (100 keys x 1,000 steps), each
  call timed alone (``perf_counter_ns`` around it): p50 and p99 in microseconds.
  The flusher thread runs meanwhile, as in training.
* ``durable``: another 100,000 points (100 keys x 1,000 steps) logged in a plain
  loop, then ``run.flush()``: the wall time from the first call until every point
  is committed in the catalog (read back and counted after), and the loop's own
  CPU time (on a busy machine, wall time also counts the waits for a CPU).
* ``sampler``: a CPU-bound training step (pure Python arithmetic, ~5 ms) run in
  blocks of 1.5 s, alternately with the run's 1 s system sampler on and off, in
  one process. The overhead is the CPU time the sampler's thread used over the
  wall time it ran (what it can take from the loop at most: it holds the GIL no
  longer than it runs); beside it, the difference of the median step times with
  and without, which the machine's other load blurs.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from harness import REPO, Bench, BenchError, say, timed

KEYS = 100
STEPS = 1_000
SAMPLER_BLOCKS = 10
BLOCK_S = 1.5


def tracking(bench: Bench) -> None:
    """log_metric latency, 100,000 points stored, sampler overhead."""
    bench.notes.append(
        f"tracking: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start "
        "(trk.durable_100k.log_cpu_s is the loop's own CPU time, which the load cannot stretch)"
    )
    say(f"tracking: log_metric x {KEYS * STEPS:,}, each timed")
    out = _child(bench, "log")
    bench.record("trk.log_metric.p50_us", out["p50_us"], "us", "log_metric p50")
    bench.record("trk.log_metric.p99_us", out["p99_us"], "us", "log_metric p99")
    say(f"tracking: {KEYS * STEPS:,} points logged and stored")
    out = _child(bench, "durable")
    if out["stored"] != KEYS * STEPS:
        raise BenchError(f"{out['stored']} points stored, not {KEYS * STEPS}")
    bench.record("trk.durable_100k.s", out["total_s"], "s", "100,000 points logged + stored")
    bench.record("trk.durable_100k.log_s", out["log_s"], "s", "of which the logging loop")
    # Wall time on a shared machine includes waiting for a CPU: the loop's own CPU time too.
    bench.record("trk.durable_100k.log_cpu_s", out["log_cpu_s"], "s", "the loop's CPU time")
    say("tracking: system sampler overhead on a CPU loop")
    out = _child(bench, "sampler")
    bench.record(
        "trk.sampler.overhead_pct", out["overhead_pct"], "%", "1 s sampler: its CPU / wall time"
    )
    bench.record(
        "trk.sampler.wall_overhead_pct",
        out["wall_overhead_pct"],
        "%",
        "CPU step slower with the sampler on (median, noisy on a busy machine)",
    )
    bench.record("trk.sampler.step_ms", out["step_ms"], "ms", "CPU step without sampler (median)")


def _child(bench: Bench, op: str) -> dict[str, Any]:
    home = bench.scratch(f"tracking-{op}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    env["LAKECACHE_HOME"] = str(home)
    run = timed([sys.executable, Path(__file__), op, str(home)], env=env, cwd=REPO, check=False)
    if run.returncode != 0:
        raise BenchError(f"tracking {op} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def _step(n: int = 40_000) -> float:
    total = 0.0
    for i in range(n):
        total += (i % 7) * 0.5
    return total


def _child_main(op: str, home: str) -> None:
    from lakecache.settings import Settings
    from lakecache.tracking import start
    from lakecache.tracking.store import TrackingStore

    settings = Settings(home=Path(home), author="bench")
    keys = [f"metric_{k:03d}" for k in range(KEYS)]
    result: dict[str, Any]
    if op == "log":
        run = start("bench", settings=settings, system_metrics=False)
        lat = []
        clock = time.perf_counter_ns
        for step in range(STEPS):
            for key in keys:
                t0 = clock()
                run.log_metric(key, 0.5, step)
                lat.append(clock() - t0)
        run.end()
        result = {"p50_us": _percentile(lat, 50) / 1000, "p99_us": _percentile(lat, 99) / 1000}
    elif op == "durable":
        run = start("bench", settings=settings, system_metrics=False)
        t0 = time.perf_counter()
        cpu0 = time.thread_time()
        for step in range(STEPS):
            for key in keys:
                run.log_metric(key, 0.5, step)
        logged = time.perf_counter() - t0
        logged_cpu = time.thread_time() - cpu0
        if not run.flush(timeout=120):
            raise SystemExit("the points were not stored")
        total = time.perf_counter() - t0
        run.end()
        from lakecache.catalog import Catalog

        with Catalog.open(settings.catalog_url) as catalog:
            store = TrackingStore(catalog)
            stored = sum(store.metric_series(run.id, k, buckets=None).points_total for k in keys)
        result = {"total_s": total, "log_s": logged, "log_cpu_s": logged_cpu, "stored": stored}
    elif op == "sampler":
        from lakecache.tracking.sampler import SystemSampler

        run = start("bench", settings=settings, system_metrics=False)
        on_steps: list[float] = []
        off_steps: list[float] = []
        sampler_cpu = sampled_wall = 0.0
        for block in range(SAMPLER_BLOCKS):
            sampler = SystemSampler(run.log_system).start() if block % 2 else None
            steps = on_steps if sampler else off_steps
            began = time.perf_counter()
            end = began + BLOCK_S
            while (t := time.perf_counter()) < end:
                _step()
                steps.append(time.perf_counter() - t)
            if sampler is not None:
                sampler.stop()
                sampler_cpu += sampler.cpu_seconds
                sampled_wall += time.perf_counter() - began
        run.end()
        off, on = statistics.median(off_steps), statistics.median(on_steps)
        result = {
            # What the sampler's thread takes from the process: a bound on the loop's loss
            # that the machine's other load cannot blur.
            "overhead_pct": sampler_cpu / sampled_wall * 100,
            "wall_overhead_pct": max(0.0, (on - off) / off * 100),
            "step_ms": off * 1000,
        }
    else:
        raise SystemExit(f"unknown op {op!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _child_main(sys.argv[1], sys.argv[2])
