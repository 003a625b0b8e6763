"""Deployment figures: two server replicas on PostgreSQL, and the container image.

- Two ``lakecache server`` processes on one PostgreSQL and the bench's SeaweedFS, behind
  a round-robin balancer (standing for the Kubernetes Service). 100 paced clients (each
  logged in, waiting 0.5 to 1.5 s between requests, as in the dashboard section) list
  datasets and browse a B-shaped commit: ``deploy.paced.p99_ms`` and errors (target:
  p99 under 100 ms, 0 errors). Then saturation (no wait) through the balancer to both
  replicas and straight to one: ``deploy.sat2.rps`` beside ``deploy.sat1.rps``. On the
  bench machine (2 cores, the clients on it too) a second replica adds processes, not
  cores: the ratio says what a second machine would have to add, not what it would.
- The image (when Podman is there): its size and its start-to-healthy time
  (``podman run`` to the first 200 from /healthz). Built FROM the local Debian bookworm +
  Python 3.11 base the tests make (no registry here), so its size is that base's plus
  lakecache's; a python:3.11-slim build differs by the base only.

The commit browsed is B-shaped (small files of about 2 kB in a few large folders) at
FILES files, generated here, not B itself: B's catalog is SQLite, and these replicas
share PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dashboard
from harness import REPO, Bench, BenchError, say

FILES = 20_000
FOLDERS = 10
PACED_CLIENTS = 100
PACED_SECONDS = 30.0
SATURATION_CLIENTS = 20
SATURATION_SECONDS = 15.0
LOAD_PROCESSES = 5
BUCKET = "bench-deploy"
USER = "admin"


def deploy(bench: Bench) -> None:
    """Two replicas under 100 paced clients, saturation with 1 and 2, the image."""
    from lakecache.services.balancer import RoundRobinBalancer
    from lakecache.services.postgres import start_postgres
    from lakecache.services.replicas import PASSWORD, ReplicaSet

    bench.create_bucket(BUCKET)
    postgres = start_postgres()
    replicas = None
    try:
        url = postgres.create_database("bench_deploy")
        lake = f"s3://{BUCKET}/lake-{int(time.time())}"
        s3 = {
            "s3_endpoint": bench.server.endpoint,
            "s3_access_key": bench.server.access_key,
            "s3_secret_key": bench.server.secret_key,
        }
        commit_id = _commit(bench, url, lake, s3)
        replicas = ReplicaSet.create(
            bench.scratch("deploy-replicas"),
            catalog_url=url,
            lake_url=lake,
            s3=s3,
            server="login_max_failures_per_ip = 1000",
        )
        say("deploy: two lakecache server replicas on PostgreSQL, behind a balancer")
        replicas.start(0)
        started = time.monotonic()
        replicas.start(1)
        bench.record(
            "deploy.replica.start_s",
            time.monotonic() - started,
            "s",
            "a second replica, from its command to /healthz (catalog already migrated)",
        )
        replicas.open_balancer()
        common = {"dataset": "b", "commit": commit_id, "user": USER, "password": PASSWORD}
        # Untimed, on each replica: every page the load asks for, once, as the dashboard
        # section does, so that the phases time servers that have been up for a while, not
        # their first compilation of each query and template.
        for replica in replicas.replicas:
            dashboard._warm({**common, "url": replica.url})
        folders = [f"d{i:02d}" for i in range(FOLDERS)]
        # One replica through a balancer of its own: both rates pay the same proxy hop.
        single = RoundRobinBalancer([("127.0.0.1", replicas.replicas[0].port)]).start()
        phases: list[tuple[str, str, int, tuple[float, float], float]] = [
            ("paced", replicas.url, PACED_CLIENTS, dashboard.THINK_S, PACED_SECONDS),
            ("sat2", replicas.url, SATURATION_CLIENTS, (0.0, 0.0), SATURATION_SECONDS),
            ("sat1", single.url, SATURATION_CLIENTS, (0.0, 0.0), SATURATION_SECONDS),
        ]
        for key, target, clients, think, seconds in phases:
            where = "both replicas" if target == replicas.url else "one replica"
            waits = f"{think[0]:g}-{think[1]:g} s between requests" if think[1] else "no wait"
            say(f"deploy: {clients} clients on {where}, {waits}, for {seconds:.0f} s")
            config = {
                **common,
                "url": target,
                "folders": folders,
                "think": think,
                "seconds": seconds,
                "max_requests": dashboard.LOAD_REQUESTS_PER_CLIENT,
            }
            pids = [r.process.pid for r in replicas.replicas if r.process is not None]
            metered = pids if target == replicas.url else pids[:1]
            meters: list[_CpuMeter] = []
            # From "go", after every client logged in: a login is a deliberately slow
            # password hash (~0.3 s of CPU here), not what a browsing request costs.
            load = _run_load(
                config,
                clients,
                on_go=lambda m=meters, p=metered: m.append(_CpuMeter(p, postgres.root)),
            )
            meter = meters[0]
            bench.notes.append(f"deploy {key}: {meter.report(load['requests'])}")
            bench.record(f"deploy.{key}.requests", load["requests"], "requests", f"{key}: answered")
            bench.record(f"deploy.{key}.errors", load["errors"], "errors", f"{key}: errors")
            bench.record(
                f"deploy.{key}.rps", load["requests"] / load["seconds"], "req/s", f"{key}: rate"
            )
            bench.record(f"deploy.{key}.p50_ms", load["p50_ms"], "ms", f"{key}: p50 latency")
            bench.record(f"deploy.{key}.p99_ms", load["p99_ms"], "ms", f"{key}: p99 latency")
            if load["error_samples"]:
                bench.notes.append(f"deploy {key} errors, e.g. {load['error_samples'][:3]}")
        single.close()
        sat1, sat2 = bench.value("deploy.sat1.rps"), bench.value("deploy.sat2.rps")
        if sat1 and sat2:
            bench.record(
                "deploy.sat2_over_sat1", sat2 / sat1, "x", "saturation: 2 replicas / 1 replica"
            )
        bench.notes.append(
            f"deploy: the browsed commit is B-shaped at {FILES:,} files (generated), not B; "
            f"load average {os.getloadavg()[0]:.1f} at the end (clients, balancer and "
            "replicas share this machine's cores)"
        )
    finally:
        if replicas is not None:
            replicas.close()
        postgres.stop()
    _image(bench)


def _commit(bench: Bench, catalog_url: str, lake: str, s3: dict[str, str]) -> str:
    """Commit a B-shaped folder (FILES files of ~2 kB in FOLDERS folders) directly."""
    src = bench.scratch("deploy-src")
    per = FILES // FOLDERS
    for i in range(FOLDERS):
        folder = src / f"d{i:02d}"
        folder.mkdir()
        for j in range(per):
            (folder / f"img{j:06d}.png").write_bytes(os.urandom(1800 + (j * 37) % 500))
    say(f"deploy: commit {FILES:,} files to a PostgreSQL catalog")
    from lakecache import Dataset, Settings

    settings = Settings(
        home=bench.scratch("deploy-home"),
        catalog_url=catalog_url,
        lake_url=lake,
        author="bench",
        **s3,
    )
    ds = Dataset.create("b", settings=settings)
    try:
        return ds.commit(src, "B-shaped").id
    finally:
        ds.hub.close()


def _run_load(
    config: dict[str, Any], clients: int, on_go: Callable[[], object] = lambda: None
) -> dict[str, Any]:
    """``clients`` logged-in browsers in LOAD_PROCESSES processes (dashboard's load loop);
    ``on_go`` is called once they have all logged in, just before they start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    per = clients // LOAD_PROCESSES
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(Path(dashboard.__file__)),
                "load",
                json.dumps({**config, "clients": per, "seed": n * per}),
            ],
            env=env,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(LOAD_PROCESSES)
    ]
    try:
        for proc in procs:
            line = proc.stdout.readline() if proc.stdout else ""
            if line.strip() != "ready":
                err = proc.stderr.read() if proc.stderr else ""
                raise BenchError(f"a load process did not start: {line!r}\n{err[-2000:]}")
        on_go()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        samples: list[list[Any]] = []
        errors: list[str] = []
        elapsed = 0.0
        for proc in procs:
            out, err = proc.communicate(timeout=float(config["seconds"]) + 120)
            if proc.returncode != 0:
                raise BenchError(f"a load process failed (exit {proc.returncode}):\n{err[-2000:]}")
            result = json.loads(out.strip().splitlines()[-1])
            samples += result["samples"]
            errors += result["error_samples"]
            elapsed = max(elapsed, result["seconds"])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return dashboard._aggregate(samples, errors, elapsed)


class _CpuMeter:
    """CPU time per request of each part of a phase, from /proc and os.times: where the
    cores went (on 2 cores shared by clients, balancer, replicas and PostgreSQL, this is
    what says whether a second replica could have added anything)."""

    def __init__(self, replica_pids: list[int], postgres_root: Path) -> None:
        self.replica_pids = replica_pids
        self.postgres_root = postgres_root
        self.started = time.monotonic()
        self.load_avg = os.getloadavg()[0]
        self.before = self._sample()

    def _sample(self) -> dict[str, float]:
        own = os.times()
        return {
            "replicas": sum(_cpu_seconds(p) for p in self.replica_pids),
            "postgres": sum(_cpu_seconds(p) for p in _postgres_pids(self.postgres_root)),
            # The load processes, once waited for (the phase waits for them all).
            "clients": own.children_user + own.children_system,
            # This process: the balancer's threads (and the bench's idle main thread).
            "balancer": own.user + own.system,
        }

    def report(self, requests: int) -> str:
        after = self._sample()
        seconds = time.monotonic() - self.started
        used = {k: after[k] - self.before[k] for k in after}
        per = ", ".join(f"{k} {1000 * v / max(requests, 1):.1f}" for k, v in used.items())
        return (
            f"CPU ms per request: {per}; these kept {sum(used.values()) / seconds:.2f} of "
            f"{os.cpu_count()} cores busy; load average {self.load_avg:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end"
        )


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_pids(root: Path) -> list[int]:
    """The postmaster of the server in ``root`` and its backends (not other PostgreSQLs)."""
    try:
        postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == postmaster:
                pids.append(int(entry.name))
    return pids


def _image(bench: Bench) -> None:
    """The image's size and start-to-healthy time (Podman, local base)."""
    import shutil

    if shutil.which("podman") is None:
        bench.notes.append("deploy: no podman here, so no image figures")
        return
    import httpx

    import lakecache
    from lakecache.services.images import build_image, python_base_image, wheelhouse
    from lakecache.services.podman import podman_config
    from lakecache.services.replicas import free_port

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lakecache"
    config = podman_config(bench.scratch("deploy-podman"))
    say("deploy: the image (FROM a local Debian bookworm + Python 3.11 base)")
    base = python_base_image(cache / "podman", config)
    wheels = wheelhouse(REPO, cache / "podman", sys.executable)
    tag = f"localhost/lakecache-bench:{lakecache.__version__}"
    build_image(REPO, config, tag=tag, base=base, version=lakecache.__version__, wheels=wheels)
    env = dict(os.environ, CONTAINERS_CONF=config["containers_conf"])
    size = json.loads(
        subprocess.run(
            ["podman", "image", "inspect", tag], env=env, capture_output=True, check=True
        ).stdout
    )[0]["Size"]
    bench.record("deploy.image.size_mb", size / 1e6, "MB", "image size (local bookworm base)")
    port = free_port()
    name = f"lakecache-bench-{port}"
    started = time.monotonic()
    subprocess.run(
        ["podman", "run", "-d", "--name", name, "--runtime", config["runtime"]]
        + ["--network", "host", tag, "server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        capture_output=True,
        check=True,
    )
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > 120:
                raise BenchError("the image's server never answered /healthz")
            time.sleep(0.05)
        bench.record(
            "deploy.image.start_s",
            time.monotonic() - started,
            "s",
            "image: podman run to the first /healthz (embedded default, first start)",
        )
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "2", name], env=env, capture_output=True)
