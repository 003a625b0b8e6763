"""Compute: jobs through queues, run by real site agents on this machine.

Three sites (s1, s2, s3), each with a cache volume and ``local`` compute, and a
``container`` (Podman) pool at s1; the catalog is SQLite in the section's home,
the lake is the bench's SeaweedFS. Site agents are real ``lakecache agent``
processes (their default settings), started and stopped by the section; the
bench submits jobs from Python as ``lakecache.submit`` does. It measures:

* submit to first process running, on ``local`` and on ``container``: each job
  touches a file in its outputs folder as its first act, and the file's mtime
  (set by the kernel) is compared with the wall clock at submit;
* 1,000 jobs of ``true`` through one queue over 3 sites (8 one-CPU slots each):
  all submitted first (a tenth one at a time, the rest as one batch), then the
  agents start; the dispatch rate is the jobs over
  the time from the first agent up to the last job finished, and the overhead
  per job is its time from claimed to finished in its timeline (``true`` itself
  takes about a millisecond);
* fallback: with s1's only slot held by a long job, submit to first process
  running at s2;
* caches ready at s3 only, a ``data`` queue over s1, s2, s3 with room at every
  one: the share of ``cached`` jobs placed at s3, and the bytes every cache of
  the dataset fetched from the lake meanwhile (the caches' own ``fetched_bytes``);
* 1,000 short jobs with two agents at s1, one of them killed (SIGKILL) mid-run:
  each job takes an exclusive ``flock`` on its own lock file (kept by the
  process that runs it until it ends) and fails with exit 75 if it cannot, so
  an attempt that overlaps another is caught in the act; stuck jobs are those
  not ended a while after the killed agent's jobs became stale.

Parts: ``BENCH_COMPUTE_PARTS`` (comma-separated: local, container, fallback, cached,
dispatch, killed) runs only those; all by default.

Scale: ``BENCH_COMPUTE_SCALE`` (e.g. 0.1), else ``--small`` (0.1), else
``BENCH_SCALE``; job counts and samples shrink with it (never below a few).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import REPO, Bench, BenchError, say

BUCKET = "bench-compute"
SITES = ("s1", "s2", "s3")
#: One-CPU slots per site's pool of the 1,000-job queue (and of the killed-agent run).
SLOTS = 8
#: The killed agent's jobs are requeued after this silence (the agent's default).
STALE_AFTER_S = 30.0
JOBS_FULL = 1000
LOCAL_SAMPLES_FULL = 50
CONTAINER_SAMPLES_FULL = 10
FALLBACK_SAMPLES_FULL = 10
CACHED_JOBS_FULL = 200
#: First act of a job: a file in its outputs folder whose mtime says when it started.
MARK = 'exec touch "$LAKECACHE_OUTPUTS/started"'


def compute(bench: Bench) -> None:
    """The compute section: see the module's docstring."""
    scale = _scale(bench)
    if scale < 1:
        bench.notes.append(
            f"compute at scale {scale:g}: {_n(JOBS_FULL, scale)} jobs, not {JOBS_FULL:,} "
            "(BENCH_COMPUTE_SCALE, --small or BENCH_SCALE)"
        )
    load = os.getloadavg()[0]
    parts = _parts()
    world = _World.make(bench)
    try:
        if parts & {"local", "container", "fallback", "cached"}:
            with world.agents(SITES):
                if "local" in parts:
                    _submit_latency(bench, world, "local", "lat", _n(LOCAL_SAMPLES_FULL, scale, 5))
                if world.container_ok and "container" in parts:
                    _submit_latency(
                        bench, world, "container", "box", _n(CONTAINER_SAMPLES_FULL, scale, 3)
                    )
                if "fallback" in parts:
                    _fallback(bench, world, _n(FALLBACK_SAMPLES_FULL, scale, 3))
                if "cached" in parts:
                    _cached(bench, world, _n(CACHED_JOBS_FULL, scale, 20))
        if "dispatch" in parts:
            _dispatch(bench, world, _n(JOBS_FULL, scale, 50))
        if "killed" in parts:
            _killed_agent(bench, world, _n(JOBS_FULL, scale, 50))
    finally:
        world.close()
        cpus = os.cpu_count() or 1
        bench.notes.append(
            f"compute ran at a 1-minute load average of {load:.1f} at its start and "
            f"{os.getloadavg()[0]:.1f} at its end, on {cpus} CPUs: its times are for "
            "that load (each process had about "
            f"{min(1.0, cpus / max(load, 1.0)):.0%} of a CPU)"
        )


#: The section's parts, in order; ``BENCH_COMPUTE_PARTS`` (comma-separated) runs some alone.
PARTS = ("local", "container", "fallback", "cached", "dispatch", "killed")


def _parts() -> set[str]:
    own = os.environ.get("BENCH_COMPUTE_PARTS", "").strip()
    if not own:
        return set(PARTS)
    chosen = {p.strip() for p in own.split(",") if p.strip()}
    unknown = chosen - set(PARTS)
    if unknown:
        raise BenchError(
            f"BENCH_COMPUTE_PARTS: unknown part(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(PARTS)}"
        )
    return chosen


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return 0.0
    # After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scale(bench: Bench) -> float:
    own = os.environ.get("BENCH_COMPUTE_SCALE")
    if own:
        return float(own)
    if getattr(bench.args, "small", False):
        return 0.1
    return float(os.environ.get("BENCH_SCALE", "1") or 1)


def _n(full: int, scale: float, least: int = 1) -> int:
    return max(least, round(full * scale))


def _pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank: p99 of 50 samples is the max."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))  # ceil
    return ordered[int(rank) - 1]


# --- the world: sites, pools, templates, queues, agents -----------------------------------


@dataclass
class _Agent:
    site: str
    proc: subprocess.Popen[bytes]
    log: Path


class _World:
    """The section's catalog and lake, opened in this process, and its agents' settings."""

    def __init__(self, bench: Bench, home: Path, env: dict[str, str], hub: Any) -> None:
        from lakecache.compute.store import ComputeStore

        self.bench = bench
        self.home = home
        self.env = env
        self.hub = hub
        self.store = ComputeStore(hub.catalog)
        self.container_ok = False
        self._agents: list[_Agent] = []
        self._count = 0

    @classmethod
    def make(cls, bench: Bench) -> _World:
        from lakecache.compute.model import Resources
        from lakecache.data.hub import Hub
        from lakecache.settings import Settings

        say("compute: 3 sites with local pools, Podman at s1, agents as processes")
        home = bench.scratch("compute") / "home"
        bench.create_bucket(BUCKET)
        settings: dict[str, Any] = {
            "home": home,
            "lake_url": f"s3://{BUCKET}/lake-{int(time.time())}",
            "s3_endpoint": bench.server.endpoint,
            "s3_region": "us-east-1",
            "s3_access_key": bench.server.access_key,
            "s3_secret_key": bench.server.secret_key,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
        env.update(
            LAKECACHE_HOME=str(home),
            LAKECACHE_LAKE=settings["lake_url"],
            LAKECACHE_S3_ENDPOINT=settings["s3_endpoint"],
            LAKECACHE_S3_REGION="us-east-1",
            LAKECACHE_S3_ACCESS_KEY=settings["s3_access_key"],
            LAKECACHE_S3_SECRET_KEY=settings["s3_secret_key"],
        )
        from lakecache.catalog.topology import Topology

        hub = Hub(Settings(**settings), remote=False)
        world = cls(bench, home, env, hub)
        store, now = world.store, _now()
        topo = Topology(hub.catalog)
        one = Resources(1000, 10**8)
        for site in SITES:
            topo.add_site(site, f"bench site {site}", now)
            root = home.parent / f"vol-{site}"
            root.mkdir()
            topo.add_volume(f"{site}-vol", site, str(root), 10**10, 86400, now)
            # The pool of the 1,000-job queue: SLOTS one-CPU slots.
            topo.add_compute(f"{site}-pool", site, "local", {}, [], now)
            store.set_capacity(f"{site}-pool", Resources(SLOTS * 1000, SLOTS * 10**8))
            store.add_template(f"{site}-small", f"{site}-pool", one, None, now)
            # A wide pool for the cached-placement run: room at every site for every job.
            topo.add_compute(f"{site}-wide", site, "local", {}, [], now)
            store.set_capacity(f"{site}-wide", Resources(10**6, 10**12))
            store.add_template(f"{site}-any", f"{site}-wide", one, None, now)
        # s1's one-slot pool, for the fallback run.
        topo.add_compute("s1-tiny", "s1", "local", {}, [], now)
        store.set_capacity("s1-tiny", one)
        store.add_template("s1-one", "s1-tiny", one, None, now)
        store.add_queue("lat", ["s1-small"], now=now)
        store.add_queue("all3", [f"{s}-small" for s in SITES], now=now)
        store.add_queue("burst", ["s1-one", "s2-small"], now=now)
        store.add_queue("data3", [f"{s}-any" for s in SITES], policy="data", now=now)
        world._add_podman(topo, one)
        return world

    def _add_podman(self, topo: Any, one: Any) -> None:
        from lakecache.compute.model import Resources
        from lakecache.services.podman import PodmanUnavailableError, busybox_image, podman_config

        try:
            config = podman_config(self.home.parent / "podman")
            cache = (
                Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                / "lakecache"
                / "podman"
            )
            config["image"] = busybox_image(cache, config)
        except (PodmanUnavailableError, OSError, subprocess.CalledProcessError) as exc:
            self.bench.notes.append(f"compute: no container figures (Podman: {exc})")
            return
        now = _now()
        topo.add_compute("s1-podman", "s1", "container", config, [], now)
        self.store.set_capacity("s1-podman", Resources(4000, 4 * 10**8))
        self.store.add_template("s1-box", "s1-podman", one, config["image"], now)
        self.store.add_queue("box", ["s1-box"], now=now)
        self.container_ok = True

    # -- agents ------------------------------------------------------------------------

    def start_agent(self, site: str) -> _Agent:
        self._count += 1
        log = self.home.parent / f"agent-{site}-{self._count}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lakecache", "agent", "--site", site],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        agent = _Agent(site, proc, log)
        self._agents.append(agent)
        return agent

    def wait_running(self, agents: Sequence[_Agent], timeout: float = 120) -> float:
        """Wait for each agent's start line; return the time.time() of the first one."""
        deadline = time.monotonic() + timeout
        first = None
        pending = list(agents)
        while pending:
            for a in list(pending):
                if "running; Ctrl-C to stop" in a.log.read_text(errors="replace"):
                    first = first or time.time()
                    pending.remove(a)
                elif a.proc.poll() is not None:
                    raise BenchError(f"agent for {a.site} exited:\n{_tail(a.log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"agents did not start within {timeout:.0f} s")
            time.sleep(0.01)
        assert first is not None
        return first

    def stop_agent(self, agent: _Agent) -> None:
        if agent.proc.poll() is None:
            agent.proc.send_signal(signal.SIGTERM)  # jobs in flight are given back
            try:
                agent.proc.wait(60)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait()
        if agent in self._agents:
            self._agents.remove(agent)

    @contextmanager
    def agents(self, sites: Sequence[str]) -> Iterator[float]:
        """Agents for ``sites`` while the block runs; yields when the first one started."""
        started = [self.start_agent(s) for s in sites]
        try:
            yield self.wait_running(started)
        finally:
            for a in started:
                self.stop_agent(a)

    def close(self) -> None:
        for a in list(self._agents):
            self.stop_agent(a)
        self.hub.close()

    # -- jobs --------------------------------------------------------------------------

    def submit(self, command: Sequence[str], queue: str, **kw: Any) -> int:
        from lakecache.compute.sdk import submit

        return submit(list(command), queue=queue, hub=self.hub, **kw).id

    def submit_many(self, command: Sequence[str], queue: str, n: int) -> list[int]:
        from lakecache.compute.sdk import submit_many

        jobs = submit_many([{"command": list(command), "queue": queue}] * n, hub=self.hub)
        return [j.id for j in jobs]

    def wait_done(self, ids: Sequence[int], timeout: float) -> list[Any]:
        """The jobs once every one has ended; raises BenchError naming the first stuck."""
        deadline = time.monotonic() + timeout
        want = set(ids)
        while True:
            left = [
                j
                for j in self.store.list_jobs(states=("queued", "placed", "running"))
                if j.id in want
            ]
            if not left:
                break
            if time.monotonic() > deadline:
                j = left[0]
                raise BenchError(
                    f"{len(left)} job(s) not ended after {timeout:.0f} s; job {j.id} is "
                    f"{j.state} ({j.reason or ''})"
                )
            time.sleep(0.1)
        return [j for j in self.store.list_jobs() if j.id in want]

    def started_at(self, job_id: int, timeout: float = 60) -> tuple[float, Any]:
        """(mtime of the job's ``started`` mark, the job) once the mark is there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.store.get_job(job_id)
            if job.workdir:
                mark = Path(job.workdir) / "outputs" / "started"
                try:
                    return mark.stat().st_mtime, job
                except FileNotFoundError:
                    pass
            if job.done:
                raise BenchError(f"job {job_id} ended {job.state} ({job.reason}) without its mark")
            time.sleep(0.005)
        raise BenchError(f"job {job_id} did not start within {timeout:.0f} s")


def _now() -> datetime:
    return datetime.now(UTC)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


# --- the runs -----------------------------------------------------------------------------


def _submit_latency(bench: Bench, world: _World, backend: str, queue: str, samples: int) -> None:
    say(f"compute: submit to first process running on {backend} ({samples} jobs, one at a time)")
    waits = []
    world.wait_done([world.submit(["sh", "-c", MARK], queue)], 120)  # warm: opens the backend
    for _ in range(samples):
        t0 = time.time()
        job_id = world.submit(["sh", "-c", MARK], queue)
        started, _job = world.started_at(job_id)
        waits.append((started - t0) * 1000)
        world.wait_done([job_id], 60)
    key = f"compute.{backend}"
    bench.record(
        f"{key}.start_p50_ms", statistics.median(waits), "ms", f"{backend}: submit to running p50"
    )
    bench.record(
        f"{key}.start_p99_ms", _pct(waits, 0.99), "ms", f"{backend}: submit to running p99"
    )


def _fallback(bench: Bench, world: _World, samples: int) -> None:
    say(f"compute: s1 full (one slot, held by a long job), {samples} jobs burst to s2")
    long_id = world.submit(["sleep", "600"], "burst")
    world.wait_done([world.submit(["sh", "-c", MARK], "burst")], 120)  # warm (to s2)
    deadline = time.monotonic() + 60
    while world.store.get_job(long_id).state != "running":
        if time.monotonic() > deadline:
            raise BenchError(f"the long job {long_id} did not start at s1")
        time.sleep(0.05)
    waits = []
    try:
        for _ in range(samples):
            t0 = time.time()
            job_id = world.submit(["sh", "-c", MARK], "burst")
            started, job = world.started_at(job_id)
            if job.site != "s2":
                raise BenchError(f"job {job_id} ran at {job.site}, not s2 (s1 is full)")
            waits.append(started - t0)
            world.wait_done([job_id], 60)
    finally:
        world.store.cancel(long_id, now=_now())
    world.wait_done([long_id], 60)
    bench.record("compute.fallback.p50_s", statistics.median(waits), "s", "fallback to s2: p50")
    bench.record("compute.fallback.max_s", max(waits), "s", "fallback to s2: slowest")


def _cached(bench: Bench, world: _World, jobs: int) -> None:
    from lakecache.cache.service import CacheService
    from lakecache.catalog.topology import Topology
    from lakecache.data.dataset import Dataset

    say(f"compute: a dataset cached at s3 only; {jobs} cached jobs on a data queue (s1, s2, s3)")
    src = world.home.parent / "xray-src"
    for n in range(40):
        folder = src / f"class{n % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{n:03}.png").write_bytes(os.urandom(20_000))
    ds = Dataset.create("xray", hub=world.hub)
    ds.commit(src, message="v1")
    ds.tag("v1")
    caches = CacheService(world.hub)
    caches.ensure_ready(caches.request("xray", "v1", site="s3"))
    topo = Topology(world.hub.catalog)

    def fetched() -> int:
        return sum(c.fetched_bytes for c in topo.list_caches(dataset="xray"))

    before = fetched()
    ids = [
        world.submit(["sh", "-c", 'test -d "$LAKECACHE_INPUT_XRAY"'], "data3", inputs=["xray@v1"])
        for _ in range(jobs)
    ]
    done = world.wait_done(ids, 120 + jobs)
    failed = [j for j in done if j.state != "succeeded"]
    if failed:
        raise BenchError(
            f"{len(failed)} cached job(s) failed; job {failed[0].id}: {failed[0].reason}"
        )
    there = sum(1 for j in done if j.site == "s3")
    bench.record(
        "compute.cached.share_pct", 100 * there / jobs, "%", "cached jobs placed at the warm site"
    )
    bench.record(
        "compute.cached.lake_bytes",
        fetched() - before,
        "B",
        "bytes the caches fetched from the lake meanwhile",
    )


def _dispatch(bench: Bench, world: _World, jobs: int) -> None:
    say(f"compute: {jobs} jobs of `true` on one queue over 3 sites ({SLOTS} slots each)")
    one_by_one = min(jobs // 10, 100)
    t0 = time.perf_counter()
    ids = [world.submit(["true"], "all3") for _ in range(one_by_one)]
    submit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids += world.submit_many(["true"], "all3", jobs - one_by_one)
    batch_s = time.perf_counter() - t0
    with world.agents(SITES) as start:
        pids = [a.proc.pid for a in world._agents]
        cpu0 = sum(_cpu_seconds(p) for p in pids)
        done = world.wait_done(ids, 120 + jobs)
        agents_cpu = sum(_cpu_seconds(p) for p in pids) - cpu0
    failed = [j for j in done if j.state != "succeeded"]
    if failed:
        raise BenchError(
            f"{len(failed)} job(s) of `true` failed; job {failed[0].id}: {failed[0].reason}"
        )
    overhead, pickup, last = [], [], 0.0
    for j in done:
        at = {e.kind: e.at for e in world.store.timeline(j.id)}
        overhead.append((at["succeeded"] - at["claimed"]).total_seconds() * 1000)
        pickup.append((at["claimed"] - at["placed"]).total_seconds() * 1000)
        last = max(last, at["succeeded"].timestamp())
    sites = {s: sum(1 for j in done if j.site == s) for s in SITES}
    print(f"    jobs per site: {', '.join(f'{s} {n}' for s, n in sites.items())}")
    bench.record(
        "compute.submit.jobs_per_s",
        one_by_one / submit_s,
        "jobs/s",
        f"submit one at a time ({one_by_one} x lakecache.submit, no agents)",
    )
    bench.record(
        "compute.submit_many.jobs_per_s",
        (jobs - one_by_one) / batch_s,
        "jobs/s",
        f"submit as one batch ({jobs - one_by_one} jobs, submit_many, no agents)",
    )
    bench.record(
        "compute.dispatch.jobs_per_s",
        jobs / (last - start),
        "jobs/s",
        f"dispatch of {jobs} jobs, first agent to last end",
    )
    bench.record(
        "compute.overhead.p50_ms",
        statistics.median(overhead),
        "ms",
        "per job: claimed to finished, p50",
    )
    bench.record(
        "compute.overhead.p99_ms", _pct(overhead, 0.99), "ms", "per job: claimed to finished, p99"
    )
    bench.record(
        "compute.agent_cpu_per_job_ms",
        agents_cpu / jobs * 1000,
        "ms",
        "CPU (user + system) of the 3 agents per job, from their start line to the last end",
    )
    bench.record(
        "compute.pickup.p50_ms", statistics.median(pickup), "ms", "per job: placed to claimed, p50"
    )
    bench.record(
        "compute.sites_used", sum(1 for n in sites.values() if n), "", "sites the jobs ran at"
    )


def _killed_agent(bench: Bench, world: _World, jobs: int) -> None:
    say(f"compute: {jobs} short jobs, two agents at s1, one killed mid-run")
    locks = world.home.parent / "locks"
    locks.mkdir()
    cmd = ["sh", "-c", 'exec flock -n -E 75 "$LOCKS/$LAKECACHE_JOB_ID" sleep 0.1']
    ids = [world.submit(cmd, "all3", env={"LOCKS": str(locks)}) for _ in range(jobs)]
    want = set(ids)
    victim = world.start_agent("s1")
    others = [world.start_agent(s) for s in SITES]
    try:
        world.wait_running([victim, *others])
        # Runner names are host:pid:site:random (see JobRunner's worker).
        worker_tag = f":{victim.proc.pid}:s1:"
        deadline = time.monotonic() + 120 + jobs
        while True:  # kill it while it runs jobs, with a third of them ended
            ended = sum(
                1 for j in world.store.list_jobs(states=("succeeded", "failed")) if j.id in want
            )
            mine = [
                j
                for j in world.store.list_jobs(states=("running",))
                if worker_tag in f"{j.worker or ''}:"
            ]
            if mine and ended >= jobs // 3:
                break
            if time.monotonic() > deadline:
                raise BenchError("the agent to kill never ran a job")
            time.sleep(0.02)
        victim.proc.kill()
        victim.proc.wait()
        print(f"    killed the agent (pid {victim.proc.pid}) with {len(mine)} job(s) running")
        stuck = 0
        try:
            done = world.wait_done(ids, STALE_AFTER_S + 120 + jobs / 5)
        except BenchError as exc:
            print(f"    {exc}")
            done = [j for j in world.store.list_jobs() if j.id in want]
            stuck = sum(1 for j in done if not j.done)
    finally:
        for a in (victim, *others):
            world.stop_agent(a)
    twice = sum(1 for j in done if j.exit_code == 75)
    no_reason = sum(1 for j in done if j.state == "failed" and not j.reason)
    again = sum(1 for j in done if j.attempt > 1)
    failed = sum(1 for j in done if j.state == "failed")
    print(f"    {again} job(s) ran a second attempt; {failed} failed, {no_reason} without a reason")
    bench.record("compute.kill.twice", twice, "jobs", "jobs that ran twice at once")
    bench.record(
        "compute.kill.stuck", stuck + no_reason, "jobs", "jobs stuck or failed without a reason"
    )
    bench.record("compute.kill.requeued", again, "jobs", "jobs requeued after the kill")
