"""``python -m lakecache.demo`` (``make demo``): lakecache end to end on a real S3 lake.

Starts a SeaweedFS S3 gateway in ``./.lakecache/demo/seaweed``, generates a small
chest-X-ray-style dataset in ``./demo-data/chest-xray``, and runs the CLI as a
user would: init, commit, tag, change a few files, commit again, then log,
diff, ls and a partial pull. Then it adds two sites (``onprem`` and ``cloud``)
with a cache volume each (folders in ``./.lakecache/demo/volumes``), caches the
dataset on both, prints ``volume ls`` and ``cache ls``, and reads the cache from
Python with ``lakecache.use``. Last it starts ``lakecache server`` with an
agent for each site, and works through it from a "laptop" home that holds no
lake keys and no catalog (``login``, ``data log``, ``cache add`` of v1 on the
cloud volume through the server, ``cache ls``, ``volume ls``).
The compute part gives each site a pool (1 CPU on-prem, 4 in the cloud) and a
queue that tries on-prem first; with the on-prem pool held by a long job, the next
job bursts to the cloud, reads the dataset from the cache there, and ``job show``
tells where it ran and why. Then the chest X-ray scenario (``lakecache example
xray``): NIH-layout images committed and cached on-prem, and a flow that splits,
prepares, trains at two learning rates side by side, keeps the best on validation
and scores it once on the test split.
Every run starts from a clean slate (the state of
the previous run is removed first); SeaweedFS stops at the end, whatever happens.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

BUCKET = "lakecache-demo"
DATASET = "xray"


def main() -> int:
    from lakecache import synth
    from lakecache.services.seaweed import start_seaweed

    root = Path.cwd()
    state = root / ".lakecache" / "demo"
    data = root / "demo-data" / "chest-xray"
    pulled = root / "demo-data" / "xray-v1-pneumonia"
    for old in (state, data, pulled):
        if old.exists():
            shutil.rmtree(old)  # loudly: a half-removed state would break this run

    _say(f"starting SeaweedFS (S3 gateway) in {_rel(state / 'seaweed')}")
    server = start_seaweed(state / "seaweed")
    try:
        _create_bucket(server.endpoint, server.access_key, server.secret_key)
        env = {
            **os.environ,
            "LAKECACHE_HOME": str(state / "home"),
            "LAKECACHE_LAKE": f"s3://{BUCKET}/lake",
            "LAKECACHE_S3_ENDPOINT": server.endpoint,
            "LAKECACHE_S3_REGION": "us-east-1",
            "LAKECACHE_S3_ACCESS_KEY": server.access_key,
            "LAKECACHE_S3_SECRET_KEY": server.secret_key,
        }
        env.pop("LAKECACHE_CATALOG", None)  # the demo's catalog is SQLite in its home

        _say(f"generating a chest-X-ray-style dataset in {_rel(data)}")
        files, nbytes = synth.generate(data, 300, median_size=30_000, seed=7)
        print(f"  {files} PNG files in 15 class folders, {nbytes / 1e6:.1f} MB")

        cli = _Cli(env, root)
        cli.run("data", "init", DATASET, "-d", "Synthetic chest X-rays, 15 classes")
        cli.run("data", "commit", DATASET, _rel(data), "-m", "first import")
        cli.run("data", "tag", DATASET, "v1")

        _say("fixing labels: moving 2 images to another class, redrawing 3, adding 3")
        moved = _relabel(data, "No_Finding", "Pneumonia", 2)
        changed, added = synth.mutate(data, fraction_changed=0.01, fraction_added=0.01, seed=3)
        print(f"  moved {moved}, changed {changed}, added {added}")
        cli.run("data", "commit", DATASET, _rel(data), "-m", "fix labels")

        cli.run("data", "log", DATASET)
        cli.run("data", "diff", f"{DATASET}@v1", f"{DATASET}@latest")
        cli.run("data", "ls", f"{DATASET}@latest")
        cli.run("data", "pull", f"{DATASET}@v1", _rel(pulled), "--path", "Pneumonia/")

        volumes = _cache_on_two_sites(cli, state)
        burst_job = _burst_to_cloud(cli, state)
        flow_run = _xray_scenario(cli, state)

        _say("where to look")
        print(f"  local state and catalog (SQLite): {_rel(state / 'home')}")
        print(f"  cache volumes (each stands for a site's NFS export or NVMe): {_rel(volumes)}")
        print(f"  the lake: s3://{BUCKET}/lake at {server.endpoint} (stops when the demo ends)")
        print(f"  the dataset's files: {_rel(data)}; pulled v1 Pneumonia/: {_rel(pulled)}")
        print(
            f"  the job that burst: `lakecache job show {burst_job}` (timeline, placement),"
            f" `lakecache job logs {burst_job}`; the dashboard's Compute and Jobs pages"
            f" (below: /compute, /jobs/{burst_job})"
        )
        print(
            f"  the chest X-ray flow: `lakecache flow show {flow_run}`, `lakecache run ls`,"
            f" `lakecache data log {_XRAY}-best`; the dashboard's /flows/{flow_run} (the DAG),"
            f" /runs (AUROC plots; compare the two trainings) and /datasets/{_XRAY}-best"
        )
        print(
            "  on your own files: `lakecache data init NAME` uses a lake folder in"
            " ~/.lakecache; set LAKECACHE_LAKE=s3://bucket/prefix for a team lake"
        )
        _serve_dashboard(env, state, root)
    except subprocess.CalledProcessError as exc:
        print(
            f"\ndemo failed: `{shlex.join(exc.cmd[1:])}` exited {exc.returncode}", file=sys.stderr
        )
        return 1
    finally:
        server.stop()
        _say("SeaweedFS stopped")
    return 0


#: (site, description, volume): two sites, one cache volume each.
SITES = (
    ("onprem", "GPU cluster, NFS export on every node", "onprem-nfs"),
    ("cloud", "cloud region, local NVMe", "cloud-nvme"),
)

#: What a training script does: the site's cache of a commit, leased while the block runs.
USE_SNIPPET = f"""\
import lakecache
with lakecache.use("{DATASET}@latest", site="onprem") as path:
    files = sum(1 for f in path.rglob("*") if f.is_file())
    print(f"{{path}}: {{files}} files")
"""


def _cache_on_two_sites(cli: _Cli, state: Path) -> Path:
    """Two sites with a cache volume each; the dataset cached on both; then used from Python."""
    volumes = state / "volumes"
    _say("caching the dataset next to the compute, on two sites")
    for site, description, vol in SITES:
        cli.run("site", "add", site, "-d", description)
        root = volumes / vol
        print(f"\n$ mkdir -p {_rel(root)}    # the volume, as mounted at {site}", flush=True)
        root.mkdir(parents=True, exist_ok=True)
        cli.run("volume", "add", vol, "--site", site, "--root", _rel(root), "--capacity", "1GB")
    for site, _, _ in SITES:
        cli.run("cache", "add", f"{DATASET}@latest", "--site", site, "--quiet")
    # v1 shares all but a few files with latest: hard-linked, not downloaded again.
    cli.run("cache", "add", f"{DATASET}@v1", "--site", "onprem", "--quiet")
    cli.run("volume", "ls")
    cli.run("cache", "ls")
    cli.python(USE_SNIPPET)
    return volumes


#: (site, compute resource, CPUs): a small pool on-prem, a larger one in the cloud.
POOLS = (("onprem", "onprem-cpu", "1"), ("cloud", "cloud-cpu", "4"))
#: What the bursting job does with its input: the path it is told, and what is there.
BURST_SCRIPT = (
    'echo "reading $LAKECACHE_INPUT_XRAY";'
    ' echo "$(find "$LAKECACHE_INPUT_XRAY" -name "*.png" | wc -l) images, read-only"'
)


def _burst_to_cloud(cli: _Cli, state: Path) -> int:
    """A pool at each site and a queue that tries on-prem first; a long job fills the
    on-prem pool, so the next job bursts to the cloud and reads the dataset from the
    cache there. Needs the two sites, and ``DATASET@latest`` cached at cloud. Returns
    the id of the job that burst."""
    _say("compute next to the data: a queue that bursts from on-prem to the cloud")
    for site, pool, cpus in POOLS:
        cli.run("compute", "add", pool, "--site", site, "--cpu", cpus, "--memory", f"{cpus}GB")
        cli.run("template", "add", f"{site}-small", "--compute", pool, "--memory", "1GB")
    cli.run("queue", "add", "burst", "--template", "onprem-small", "--template", "cloud-small")
    agents = _start_agents(cli, state)
    try:
        _say("the on-prem pool (1 CPU) is taken by a long job")
        long_job = _job_id(cli.capture("job", "run", "--queue", "burst", "--", "sleep", "300"))
        _wait_for(cli, long_job, ("running",))
        print(f"  job {long_job} is running on onprem: its pool has no room left")
        _say("the next job bursts to the cloud, where the dataset is cached")
        job = _job_id(
            cli.capture(
                "job", "run", "--queue", "burst", "--input", f"{DATASET}@latest",
                "--", "sh", "-c", BURST_SCRIPT,
            )
        )  # fmt: skip
        cli.run("job", "logs", "--follow", str(job))
        _wait_for(cli, job, ("succeeded", "failed", "cancelled"))
        cli.run("job", "show", str(job))
        cli.run("job", "cancel", str(long_job))
        ended = _wait_for(cli, long_job, ("cancelled", "failed", "succeeded"))
        print(f"  job {long_job} {ended}: the on-prem pool is free again")
    finally:
        _stop_agents(agents)
    return job


#: The scenario's dataset (NIH ChestX-ray14 layout), next to the class-folder one above.
_XRAY = "xray14"


def _xray_scenario(cli: _Cli, state: Path) -> int:
    """The chest X-ray scenario (``lakecache example xray``) on the demo's lake and sites:
    NIH-layout images committed, cached on onprem, the library's flow split -> prepare ->
    train at two learning rates in parallel -> pick the best on validation -> evaluate it
    on the test split, tracked. Returns the flow run's id."""
    _say("the chest X-ray scenario: a flow on the cached dataset, two trainings, the best kept")
    args = ["example", "xray", "--dir", _rel(state / "xray-example"), "-p", "epochs=2"]
    print(f"\n$ lakecache {shlex.join(args)}", flush=True)
    proc = subprocess.Popen(
        [*cli.argv0, *args], env=cli.env, cwd=cli.cwd, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    run_id = None
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith("flow run ") and line.split()[2].rstrip(":").isdigit():
            run_id = int(line.split()[2].rstrip(":"))
    if proc.wait() != 0 or run_id is None:
        raise subprocess.CalledProcessError(proc.returncode or 1, proc.args)
    cli.run("flow", "show", str(run_id))
    return run_id


def _start_agents(cli: _Cli, state: Path) -> list[subprocess.Popen[bytes]]:
    """An agent for each site (it runs the jobs placed there); their logs go to a file."""
    import time

    log_path = state / "agents.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    procs = []
    with open(log_path, "ab") as log:
        for site, _, _ in SITES:
            print(f"\n$ lakecache agent --site {site} &    # log: {_rel(log_path)}", flush=True)
            procs.append(
                subprocess.Popen(
                    [*cli.argv0, "agent", "--site", site],
                    env=cli.env,
                    cwd=cli.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            )
    deadline = time.monotonic() + 120
    while log_path.read_text(errors="replace").count("running; Ctrl-C to stop") < len(procs):
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            _stop_agents(procs)
            print(log_path.read_text(errors="replace")[-2000:], file=sys.stderr)
            raise subprocess.CalledProcessError(dead[0].returncode if dead else 1, procs[0].args)
        time.sleep(0.1)
    return procs


def _stop_agents(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()  # an agent stops its loops; jobs in flight go back to their queue
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _job_id(printed: str) -> int:
    """The id in ``job run``'s answer ("job 3 placed on ..." or "job 3 queued; ...")."""
    words = printed.split()
    if len(words) < 2 or words[0] != "job" or not words[1].isdigit():
        raise RuntimeError(f"job run answered {printed!r}, not 'job ID ...'")
    return int(words[1])


def _wait_for(cli: _Cli, job: int, states: tuple[str, ...], timeout: float = 120) -> str:
    """Wait (quietly) for the job to reach one of ``states``; return the one it reached."""
    import time

    from lakecache.compute.sdk import Job
    from lakecache.settings import Settings

    deadline = time.monotonic() + timeout
    with Job(job, settings=Settings.load(cli.env)) as handle:
        while (state := handle.state) not in states:
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job} is {state} after {timeout:.0f} s, not {states}")
            time.sleep(0.1)
    return state


def _serve_dashboard(env: dict[str, str], state: Path, root: Path) -> None:
    """Start the control-plane server on the demo's catalog and lake, agents for both sites.

    In a terminal it serves until Ctrl-C; otherwise (CI, a pipe, or
    LAKECACHE_DEMO_SERVE=0) it checks the dashboard answers, then stops.
    """
    import secrets
    import socket
    import time
    import urllib.request

    config = state / "server.toml"
    lines = []
    for site, description, _vol in SITES:
        lines += [
            "[[sites]]",
            f'name = "{site}"',
            f'description = "{description}"',
            "agent = true",
            "",
        ]
    config.write_text("\n".join(lines))
    port = 8765
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            port = 0  # 8765 is taken: let the server pick a free port
    password = secrets.token_urlsafe(12)
    server_env = {**env, "LAKECACHE_ADMIN_PASSWORD": password}
    cmd = [sys.executable, "-m", "lakecache", "server"]
    cmd += ["--port", str(port), "--config", str(config)]
    _say("the control plane: dashboard and API, with agents for both sites")
    # Its log (a line per request) goes to a file: the terminal tells the story.
    log_path = state / "server.log"
    print(
        f"$ lakecache server --port {port} --config {_rel(config)}    # log: {_rel(log_path)}",
        flush=True,
    )
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, env=server_env, cwd=root, stdout=subprocess.PIPE, stderr=log, text=True
        )
    url = None
    assert proc.stdout is not None
    for line in proc.stdout:
        print("  " + line.rstrip(), flush=True)
        if line.startswith("lakecache server at "):
            url = line.split(" at ", 1)[1].strip()
        if line.startswith("log in:"):
            break
    if url is None:
        proc.terminate()
        raise subprocess.CalledProcessError(proc.wait(), cmd)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    _work_through(url, password, env, state, root)
    print(f"\n  dashboard: {url}/   log in as admin / {password}")
    print(f"  CLI:       lakecache login {url} --user admin")
    interactive = sys.stdin.isatty() and os.environ.get("LAKECACHE_DEMO_SERVE", "1") != "0"
    try:
        if interactive:
            print("  serving until Ctrl-C", flush=True)
            for line in proc.stdout:
                print("  " + line.rstrip(), flush=True)
            proc.wait()
        else:
            with urllib.request.urlopen(f"{url}/login", timeout=10) as r:
                print(f"  (not a terminal: checked the dashboard answers {r.status}, stopping it)")
    except KeyboardInterrupt:
        pass
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _work_through(url: str, password: str, env: dict[str, str], state: Path, root: Path) -> None:
    """A teammate's laptop: no lake credentials, no catalog; everything through the server."""
    _say("a teammate's laptop: logged in to the server, with no lake keys and no catalog")
    laptop = {k: v for k, v in env.items() if not k.startswith(("LAKECACHE_", "AWS_"))}
    laptop["LAKECACHE_HOME"] = str(state / "laptop")
    cli = _Cli(laptop, root)
    cli.run("login", url, "--user", "admin", "--password-stdin", stdin=password + "\n")
    cli.run("data", "log", "xray")
    # This machine mounts the cloud volume too: the CLI claims the fill (or the server's
    # agent for cloud does, whichever is first) and hard-links what v1 shares with latest.
    cli.run("cache", "add", "xray@v1", "--site", "cloud", "--quiet")
    cli.run("cache", "ls")
    cli.run("volume", "ls")


class _Cli:
    """Runs ``lakecache ...`` as a user would type it, echoing the command first."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd
        script = Path(sys.executable).parent / "lakecache"
        self.argv0 = [str(script)] if script.is_file() else [sys.executable, "-m", "lakecache.cli"]

    def run(self, *args: str, stdin: str | None = None) -> None:
        print(f"\n$ lakecache {shlex.join(args)}", flush=True)
        subprocess.run(
            [*self.argv0, *args], env=self.env, cwd=self.cwd, check=True, input=stdin, text=True
        )

    def capture(self, *args: str) -> str:
        """Like :meth:`run`, and return what it printed (printed here too)."""
        print(f"\n$ lakecache {shlex.join(args)}", flush=True)
        out = subprocess.run(
            [*self.argv0, *args], env=self.env, cwd=self.cwd, check=True, text=True,
            stdout=subprocess.PIPE,
        ).stdout  # fmt: skip
        print(out, end="", flush=True)
        return out

    def python(self, code: str) -> None:
        print(f"\n$ python -c '\n{code}'", flush=True)
        subprocess.run([sys.executable, "-c", code], env=self.env, cwd=self.cwd, check=True)


def _create_bucket(endpoint: str, access_key: str, secret_key: str) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    try:
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if BUCKET not in existing:
            client.create_bucket(Bucket=BUCKET)
    finally:
        client.close()


def _relabel(data: Path, source: str, target: str, count: int) -> int:
    """Move the first ``count`` images of class ``source`` to ``target``: a label fix."""
    (data / target).mkdir(exist_ok=True)
    moved = 0
    for path in sorted((data / source).glob("*.png"))[:count]:
        path.rename(data / target / path.name)
        moved += 1
    return moved


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
