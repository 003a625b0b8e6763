"""The tracking pages' speed: the runs table of 10,000 runs, a 1,000,000-point plot, compare of 20.

On a fresh embedded home (SQLite catalog, folder lake) in ``work/tracking-pages``:

- an experiment of 10,000 runs, each with 100 params and 5 metrics (logged in
  batches through the tracking store, as the server stores what the SDK sends);
- one run with a 1,000,000-point metric;
- 20 of the runs with a 10,000-point ``loss`` each, for compare.

Then ``lakecache``'s app is served by uvicorn on 127.0.0.1 (a thread of this
process) and timed over HTTP with a logged-in session, each request 5 times
after one untimed warm-up, the median kept:

- the runs table's first page (50 runs, default columns), and the same sorted
  by a param and filtered by a metric;
- the 1,000,000-point series, downsampled by the server to 1,000 buckets;
- compare of 20 runs: the page and the 20 series its plots fetch (6 at a time,
  as a browser does), from the first request to the last byte.

Beside each median wall time, the median CPU time of this process over the same
request (the server's thread and the client's), and the load average in the notes: on
a shared machine a wall time also counts the waits for a CPU.

``BENCH_TRACKING_SCALE`` (default 1) scales the run and point counts for a
quick look; a figure measured below full size says so in the notes.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from harness import Bench, BenchError, say

RUNS = 10_000
PARAMS = 100
METRICS = 5
BIG_POINTS = 1_000_000
COMPARE = 20
COMPARE_POINTS = 10_000
REPEAT = 5
PASSWORD = "bench-admin-password"


def tracking_pages(bench: Bench) -> None:
    import uvicorn

    from lakecache.server import ControlPlane, ServerConfig, create_app
    from lakecache.settings import Settings
    from lakecache.tracking.model import Batch
    from lakecache.tracking.store import TrackingStore

    scale = float(os.environ.get("BENCH_TRACKING_SCALE", "1"))
    runs = max(COMPARE, int(RUNS * scale))
    big = max(1000, int(BIG_POINTS * scale))
    if scale != 1:
        bench.notes.append(
            f"tracking pages: {runs:,} runs and a {big:,}-point series "
            f"(BENCH_TRACKING_SCALE={scale}), not {RUNS:,} and {BIG_POINTS:,}"
        )
    home = bench.scratch("tracking-pages")
    settings = Settings(home=home / "home", workers=2, author="bench")
    config = ServerConfig(admin_password=PASSWORD)
    plane = ControlPlane.open(settings, config)
    try:
        store = TrackingStore(plane.hub.catalog)
        say(f"  storing {runs:,} runs x {PARAMS} params ...")
        start = time.perf_counter()
        ids = _populate(
            plane.hub.catalog, store.get_or_create_experiment("sweep", "bench").id, runs
        )
        bench.record("trk.populate_s", time.perf_counter() - start, "s", f"{runs:,} runs stored")
        big_run = ids[-1]
        store.log_batch(
            big_run,
            Batch.of(metrics=[("loss", 1 / (1 + s), s, s) for s in range(big)]),
        )
        compared = ids[:COMPARE]
        for run_id in compared:
            points = [("loss", 1 / (1 + s + run_id), s, s) for s in range(COMPARE_POINTS)]
            store.log_batch(run_id, Batch.of(metrics=points))
        experiment = store.get_experiment("sweep").id
        app = create_app(settings, config, plane=plane)
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            _wait(port)
            _measure(bench, f"http://127.0.0.1:{port}", experiment, runs, big_run, big, compared)
        finally:
            server.should_exit = True
            thread.join(10)
    finally:
        plane.close()


def _populate(catalog: Any, experiment_id: int, runs: int) -> list[int]:
    """The runs, their params and latest metrics, in one transaction per 1,000 runs.

    Straight into the tracking tables: the figure here is the pages' speed over a
    large experiment, not logging's (the tracking section times that), and 10,000
    runs logged one by one would take minutes before anything is measured.
    """
    from datetime import UTC, datetime, timedelta

    from lakecache.tracking import tables as tt

    base = datetime(2026, 1, 1, tzinfo=UTC)
    ids: list[int] = []
    for first in range(0, runs, 1000):
        with catalog._write() as conn:
            for n in range(first, min(runs, first + 1000)):
                row = conn.execute(
                    tt.tracking_runs.insert().values(
                        experiment_id=experiment_id,
                        name=f"trial-{n:05d}",
                        user_name="bench",
                        status="finished",
                        started_at=base + timedelta(seconds=n),
                        ended_at=base + timedelta(seconds=n + 60),
                        command="[]",
                        env="{}",
                        code="{}",
                    )
                )
                ids.append(int(row.inserted_primary_key[0]))
            chunk = ids[first:]
            conn.execute(
                tt.tracking_params.insert(),
                [
                    {"run_id": run_id, "key": f"p{k:03d}", "value": str((n * 7 + k) % 997)}
                    for n, run_id in enumerate(chunk, first)
                    for k in range(PARAMS)
                ],
            )
            conn.execute(
                tt.tracking_latest_metrics.insert(),
                [
                    {
                        "run_id": run_id,
                        "key": f"m{k}",
                        "step": 100,
                        "ts": 0,
                        "value": math.sin(n + k),
                    }
                    for n, run_id in enumerate(chunk, first)
                    for k in range(METRICS)
                ],
            )
    return ids


def _measure(
    bench: Bench, url: str, experiment: int, runs: int, big_run: int, big: int, compared: list[int]
) -> None:
    bench.notes.append(
        f"tracking pages: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
        "when measured (the .cpu figures are what the load cannot stretch)"
    )
    record = bench.record

    def timed(key: str, call: Any, label: str) -> None:
        wall, cpu = _median(call)
        record(key, wall * 1000, "ms", label)
        record(key.replace("_ms", "_cpu_ms"), cpu * 1000, "ms", "of which CPU (server + client)")

    with httpx.Client(base_url=url, timeout=60) as client:
        client.post("/api/v1/auth/login", json={"name": "admin", "password": PASSWORD})

        def page(path: str, must: str) -> Any:
            r = client.get(path)
            if r.status_code != 200 or must not in r.text:
                raise BenchError(f"GET {path}: {r.status_code}, {r.text[:200]!r}")
            return lambda: client.get(path).raise_for_status()

        timed(
            "trk.runs_page_ms",
            page(f"/experiments/{experiment}", f"of {runs:,}"),
            f"runs table, first page of {runs:,} runs x {PARAMS} params",
        )
        timed(
            "trk.runs_sorted_ms",
            page(
                f"/experiments/{experiment}?sort=param:p042&order=asc&filter=metric:m1+%3E+0",
                "matching the filter",
            ),
            "runs table sorted by a param, filtered by a metric",
        )
        series = f"/runs/{big_run}/series?key=loss"
        body = client.get(series).json()
        if body.get("points_total") != big or len(body["steps"]) > 1000:
            raise BenchError(f"the {big:,}-point series came back as {str(body)[:200]}")
        timed(
            "trk.series_big_ms",
            lambda: client.get(series).raise_for_status(),
            f"a {big:,}-point metric, downsampled to 1,000 buckets",
        )
        ids = "&".join(f"id={i}" for i in compared)

        def compare() -> None:
            client.get(f"/runs/compare?{ids}").raise_for_status()
            with ThreadPoolExecutor(6) as pool:
                for r in pool.map(lambda i: client.get(f"/runs/{i}/series?key=loss"), compared):
                    r.raise_for_status()

        compare()
        timed(
            "trk.compare_ms",
            compare,
            f"compare of {len(compared)} runs: the page and its {len(compared)} series",
        )


def _median(call: Any) -> tuple[float, float]:
    """The median wall time and the median CPU time of this process of ``REPEAT`` calls."""
    times, cpus = [], []
    for _ in range(REPEAT):
        start, cpu = time.perf_counter(), time.process_time()
        call()
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(times), statistics.median(cpus)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"the server on port {port} did not start")
