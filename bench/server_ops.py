"""Issue 4's transfer target: commit and pull of A through a lakecache server.

A ``lakecache server`` process serves a fresh bucket on the bench's SeaweedFS
(fresh catalog, fresh state), as the direct ``lakecache-a`` section had. The
client children are the same SDK calls as the direct ones (``lakecache_ops.py
commit|pull``), with settings that name only the server and an API token: no
lake, no catalog, no S3 credentials. Bytes go between the client and SeaweedFS
on presigned URLs; the server signs them and checks what it records.

Figures: ``a.srv.commit.s`` and ``a.srv.pull.s``, and their ratios to the direct
``a.lc.commit.s`` and ``a.lc.pull.s`` (target: at most 1.2, within 20%).
``server-start`` times ``lakecache server`` on the embedded default from the
command to its first health answer (target: under 3 s).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import REPO, Bench, BenchError, check_copy, link_tree, mb, remove, say, timed

BUCKET = "bench-server"
ADMIN = "admin"


def server_a(bench: Bench) -> None:
    """Commit A cold and pull it into an empty folder, through a server."""
    a = bench.datasets["A"]
    bench.create_bucket(BUCKET)
    home = bench.scratch("srv-home")
    client_home = bench.work_dir / "srv-client"
    remove(client_home)
    work = bench.work_dir / "srv-A"
    link_tree(a.path, work)
    password = secrets.token_urlsafe(16)
    proc, url = _start_server(bench, home, password)
    try:
        token = _token(url, password)
        settings = {"home": str(client_home), "server_url": url, "token": token}

        say("server: commit A through the server (cold: empty lake, empty local state)")
        run, out = _child(settings, "commit", dataset="a", path=str(work), message="first import")
        if out.get("file_count") != a.files:
            raise BenchError(f"commit through the server: {out.get('file_count')} files")
        bench.record("a.srv.commit.s", run.seconds, "s", "commit A through a server")
        bench.record("a.srv.commit.MBps", mb(a.bytes) / run.seconds, "MB/s", "its rate")
        bench.record("a.srv.commit.peak_mib", run.peak_mib, "MiB", "its client's peak memory")

        say("server: pull A through the server into an empty folder")
        dst = bench.scratch("srv-pull-A")
        remove(dst)
        run, _ = _child(settings, "pull", dataset="a", ref="latest", dest=str(dst))
        check_copy(bench, dst, a, "pull through the server")
        bench.record("a.srv.pull.s", run.seconds, "s", "pull A through a server")
        bench.record("a.srv.pull.MBps", mb(a.bytes) / run.seconds, "MB/s", "its rate")
        bench.record("a.srv.pull.peak_mib", run.peak_mib, "MiB", "its client's peak memory")
        remove(dst)
        for op in ("commit", "pull"):
            direct, remote = bench.value(f"a.lc.{op}.s"), bench.value(f"a.srv.{op}.s")
            if direct and remote:
                print(f"    {op} through the server / direct: {remote / direct:.2f}x", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def server_start(bench: Bench) -> None:
    """``lakecache server`` on the embedded default: from the command to a health answer.

    First start on an empty home (catalog created and migrated, the site and its
    volume set up, the first admin made, its agent started), then a second start
    on the same home. Each is the median of three, in a fresh process.
    """
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    env["LAKECACHE_ADMIN_PASSWORD"] = secrets.token_urlsafe(16)
    argv = [sys.executable, "-m", "lakecache", "server", "--port"]
    say("server: start on the embedded default (SQLite, a folder lake, one site and its agent)")
    for phase in ("first", "again"):
        times = []
        for i in range(3):
            home = bench.work_dir / f"start-home-{i}"
            if phase == "first":
                remove(home)
            port = _free_port()
            env["LAKECACHE_HOME"] = str(home)
            t = time.perf_counter()
            proc = subprocess.Popen(
                [*argv, str(port)],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                while True:
                    if proc.poll() is not None:
                        raise BenchError(f"the server exited {proc.returncode} at start")
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.perf_counter() - t > 60:
                        raise BenchError("the server did not answer within 60 s")
                    time.sleep(0.02)
                times.append(time.perf_counter() - t)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        label = "first start, empty home" if phase == "first" else "start on the same home"
        bench.record(f"srv.start.{phase}.s", sorted(times)[1], "s", f"server {label} (median of 3)")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(bench: Bench, home: Path, password: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    env |= {
        "LAKECACHE_HOME": str(home),
        "LAKECACHE_LAKE": f"s3://{BUCKET}/lake",
        "LAKECACHE_S3_ENDPOINT": bench.server.endpoint,
        "LAKECACHE_S3_REGION": "us-east-1",
        "LAKECACHE_S3_ACCESS_KEY": bench.server.access_key,
        "LAKECACHE_S3_SECRET_KEY": bench.server.secret_key,
        "LAKECACHE_ADMIN_PASSWORD": password,
    }
    log = open(bench.work_dir / "srv.log", "wb")  # noqa: SIM115 - the server's lifetime
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lakecache",
            "server",
            "--port",
            str(port),
            "--no-agent",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the server exited {proc.returncode}; see {bench.work_dir}/srv.log")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise BenchError("the server did not answer within 60 s")


def _token(url: str, password: str) -> str:
    import httpx

    r = httpx.post(
        f"{url}/api/v1/auth/token",
        json={"name": ADMIN, "password": password, "token_name": "bench"},
        timeout=30,
    )
    if r.status_code != 201:
        raise BenchError(f"no token from the server: HTTP {r.status_code} {r.text[:300]}")
    return str(r.json()["token"])


def _child(settings: dict[str, Any], op: str, **args: Any) -> tuple[Any, dict[str, Any]]:
    """One SDK operation in a child process, as the direct section runs it."""
    config = json.dumps({"settings": settings, **args})
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LAKECACHE_", "AWS_"))  # the client gets no lake credentials
    }
    script = Path(__file__).with_name("lakecache_ops.py")
    run = timed([sys.executable, script, op, config], env=env, cwd=REPO, check=False)
    if run.returncode != 0:
        raise BenchError(
            f"{op} through the server failed (exit {run.returncode}):\n{run.stderr[-3000:]}"
        )
    lines = run.stdout.strip().splitlines()
    if not lines:
        raise BenchError(f"{op} through the server printed no result:\n{run.stderr[-2000:]}")
    return run, json.loads(lines[-1])
