"""Issue 4's targets: the server under 50 concurrent clients, and a commit's page in Chromium.

Runs on B's lake and catalog (``work/lc-home``, left by ``lakecache-b``: B's
627,615 files committed to SeaweedFS); when that section did not run, B is
committed here first. Then:

- the server: ``lakecache server`` as its own process on 127.0.0.1 (agents off),
  pointed at that lake and catalog by a config file, with a fresh org admin;
- warm-up: one listing of B's root and of its largest folder, timed (the first
  listing of a commit builds the server's local index of its manifest, unless
  the SDK reads of ``lakecache-b`` left it there); then, untimed, every page the
  load asks for, once;
- load: 50 clients, each a thread with its own session cookie and keep-alive
  connection, in 5 processes of 10 (one process of 50 threads would queue the
  responses on its own interpreter lock and time that too), all logged in
  before a common start, for a bounded time and request count. Each loops
  like a person on the dashboard: the datasets list (API), a page of the
  commit's root folder (API), the first page of a random class folder (API),
  the next page of it (API, by its cursor), and the dashboard's HTML page of
  that folder. Two phases:

  * paced (the target): a client waits 0.5 to 1.5 s between two requests, as a
    person clicking does, and as the dashboard does while it polls a filling
    cache once a second; the clients start spread over the first 1.5 s;
  * saturation (for the record): no wait at all, so the 50 clients measure
    what the server sustains; latency is then the queue (clients / rate).

  Every request's latency is kept; an error is any status but 200 or a
  transport failure. The server's CPU time over each timed window is shown;
- render: headless Chromium (Debian package) opens the commit's file-browser
  page, its largest folder's page and the dataset's version hub, each in a
  fresh browser context (empty browser cache), 5 times; the time from
  navigation start to the file list visible (Python's clock around
  ``page.goto`` up to the list's first row being visible) is the figure, with
  the browser's own navigation timing beside it.

Each child is ``python bench/dashboard.py OP CONFIG`` and prints one JSON line.
"""

from __future__ import annotations

import gc
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import cache_ops
import lakecache_ops
from harness import REPO, Bench, BenchError, say

CLIENTS = 50
#: Seconds a client waits between two requests (uniform in this range): a person clicking
#: through the dashboard, or the dashboard itself, which polls once a second while a cache
#: fills. The target is judged on this phase.
THINK_S = (0.5, 1.5)
PACED_SECONDS = 30.0
#: The same 50 clients with no wait at all: what the server sustains, for the record.
SATURATION_SECONDS = 15.0
#: Each client also stops after this many requests, whatever the time.
LOAD_REQUESTS_PER_CLIENT = 2_000
#: The 50 clients run as this many processes of CLIENTS / LOAD_PROCESSES threads, so that
#: the load generator's own interpreter lock does not queue the responses it times.
LOAD_PROCESSES = 5
RENDER_REPEATS = 5
PAGE_LIMIT = 100  # items per API page, as the CLI and the dashboard's "Load more" ask
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


# --- the section (bench process) ---------------------------------------------------------


def dashboard(bench: Bench) -> None:
    """Latency under 50 concurrent clients, and the render time of B's commit page."""
    b = cache_ops._b_commit(bench)
    config = _config_file(bench)
    _, account = _child(bench, "setup", config=str(config))
    port = _free_port()
    say(f"dashboard: lakecache server on 127.0.0.1:{port} over B ({b['files']:,} files)")
    server = _start_server(bench, config, port)
    url = f"http://127.0.0.1:{port}"
    try:
        common = {"url": url, "dataset": "b", "commit": b["id"], **account}
        _, warm = _child(bench, "warm", **common)
        bench.record(
            "b.dash.first_root_ms", warm["root_ms"], "ms", "server: first listing of B's root"
        )
        bench.record(
            "b.dash.first_folder_ms",
            warm["folder_ms"],
            "ms",
            f"server: first page of {warm['largest']}/ ({warm['largest_files']:,} files)",
        )
        folders = warm["folders"]

        for phase, think, seconds in (
            ("paced", THINK_S, PACED_SECONDS),
            ("saturation", (0.0, 0.0), SATURATION_SECONDS),
        ):
            _load_phase(bench, server, common, folders, phase, think, seconds)

        say("dashboard: B's commit page in headless Chromium")
        if not Path(CHROMIUM).exists():
            raise BenchError(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
        _, render = _child(bench, "render", **common, largest=warm["largest"])
        for key, label in (
            ("root", "commit page (file browser, root)"),
            ("folder", f"largest folder page ({warm['largest']}/)"),
            ("hub", "version hub page"),
        ):
            r = render[key]
            bench.record(f"b.dash.render.{key}_ms", r["first_ms"], "ms", f"render {label}, first")
            bench.record(
                f"b.dash.render.{key}_median_ms",
                r["median_ms"],
                "ms",
                f"render {label}, median of {RENDER_REPEATS}",
            )
            print(
                f"      browser timing (median): response end {r['response_end_ms']:.0f} ms, "
                f"DOM content loaded {r['dcl_ms']:.0f} ms, first contentful paint "
                f"{r['fcp_ms']:.0f} ms",
                flush=True,
            )
    finally:
        server.stop()


def _load_phase(
    bench: Bench,
    server: _Server,
    common: dict[str, Any],
    folders: list[str],
    phase: str,
    think: tuple[float, float],
    seconds: float,
) -> None:
    waits = f"{think[0]:g}-{think[1]:g} s between requests" if think[1] else "no wait"
    say(f"dashboard: {CLIENTS} concurrent clients, {waits}, for {seconds:.0f} s ({phase})")
    load_before = os.getloadavg()[0]
    load, server_cpu = _run_load(
        bench,
        server,
        {
            **common,
            "folders": folders,
            "seconds": seconds,
            "think": think,
            "max_requests": LOAD_REQUESTS_PER_CLIENT,
        },
    )
    key = f"dash.{phase}"
    bench.record(f"{key}.requests", load["requests"], "requests", f"{phase}: requests answered")
    bench.record(f"{key}.errors", load["errors"], "errors", f"{phase}: errors")
    bench.record(f"{key}.rps", load["requests"] / load["seconds"], "req/s", f"{phase}: rate")
    bench.record(f"{key}.p50_ms", load["p50_ms"], "ms", f"{phase}: p50 latency")
    bench.record(f"{key}.p99_ms", load["p99_ms"], "ms", f"{phase}: p99 latency")
    bench.record(f"{key}.max_ms", load["max_ms"], "ms", f"{phase}: slowest request")
    for kind, row in load["kinds"].items():
        print(
            f"    {kind:<22} {row['n']:>7,} requests  p50 {row['p50_ms']:6.1f} ms  "
            f"p99 {row['p99_ms']:6.1f} ms  errors {row['errors']}",
            flush=True,
        )
    print(
        f"    server CPU: {server_cpu:.1f} s in {load['seconds']:.1f} s "
        f"({server_cpu / load['seconds']:.2f} cores, "
        f"{1000 * server_cpu / max(1, load['requests']):.1f} ms a request); "
        f"machine: {os.cpu_count()} cores, the clients on it too; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (anything else running "
        "on the machine shows in the tail)",
        flush=True,
    )
    if load["error_samples"]:
        bench.notes.append(f"dashboard {phase} errors, e.g. {load['error_samples'][:3]}")


def _run_load(
    bench: Bench, server: _Server, config: dict[str, Any]
) -> tuple[dict[str, Any], float]:
    """Start LOAD_PROCESSES load children; once all have logged in, start them together.

    Returns the summary of every request they timed, and the server's CPU seconds
    over the timed window only (the logins before it are argon2 hashing).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    per = CLIENTS // LOAD_PROCESSES
    procs = []
    for n in range(LOAD_PROCESSES):
        args = json.dumps({**config, "clients": per, "seed": n * per})
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "load", args],
                env=env,
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for proc in procs:  # each says "ready" once its clients are logged in
            line = proc.stdout.readline() if proc.stdout else ""
            if line.strip() != "ready":
                err = proc.stderr.read() if proc.stderr else ""
                raise BenchError(f"a load process did not start: {line!r}\n{err[-2000:]}")
        cpu_before = _cpu_seconds(server.pid)
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
        server_cpu = _cpu_seconds(server.pid) - cpu_before
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return _aggregate(samples, errors, elapsed), server_cpu


def _aggregate(samples: list[list[Any]], errors: list[str], seconds: float) -> dict[str, Any]:
    """Percentiles over all samples (kind, ms, ok), and by kind."""
    kinds: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(k for k, _, _ in samples):
        rows = [(ms, ok) for k, ms, ok in samples if k == kind]
        kinds[kind] = {**_summary([ms for ms, _ in rows]), "errors": sum(not ok for _, ok in rows)}
    return {
        "requests": len(samples),
        "errors": sum(not ok for _, _, ok in samples),
        "seconds": seconds,
        **_summary([ms for _, ms, _ in samples]),
        "kinds": kinds,
        "error_samples": errors[:10],
    }


class _Server:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.log = log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start_server(bench: Bench, config: Path, port: int) -> _Server:
    import httpx

    log = bench.work_dir / "dashboard-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    argv = [sys.executable, "-m", "lakecache", "server", "--config", str(config)]
    argv += ["--port", str(port), "--no-agent", "--log-level", "warning"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    server = _Server(proc, log)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise BenchError(f"the server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise BenchError(f"the server did not answer in 60 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def _config_file(bench: Bench) -> Path:
    s = lakecache_ops._settings_dict(bench)
    lines = ["[lakecache]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in s.items()]
    lines += ["", "[server]", 'host = "127.0.0.1"', "agents = false"]
    path = bench.work_dir / "dashboard-server.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child(bench: Bench, op: str, **args: Any) -> tuple[Any, dict[str, Any]]:
    config = json.dumps(args)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, __file__, op, config], env=env, cwd=REPO, capture_output=True, text=True
    )
    if run.returncode != 0:
        raise BenchError(f"dashboard {op} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    lines = run.stdout.strip().splitlines()
    if not lines:
        raise BenchError(f"dashboard {op} printed no result; stderr:\n{run.stderr[-2000:]}")
    return time.perf_counter() - started, json.loads(lines[-1])


# --- children ----------------------------------------------------------------------------


def _setup(config: dict[str, Any]) -> dict[str, Any]:
    """An org admin for this run, in the server's catalog (created before the server starts)."""
    import secrets
    from dataclasses import replace

    from lakecache.server import ControlPlane, load_config

    settings, server_config = load_config(Path(config["config"]), {})
    plane = ControlPlane.open(settings, replace(server_config, agents=False))
    try:
        name = f"bench-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(18)
        plane.accounts.create_user(name, password, org_admin=True, now=plane.clock.now())
    finally:
        plane.close()
    return {"user": name, "password": password}


def _session(config: dict[str, Any]) -> Any:
    import httpx

    client = httpx.Client(base_url=config["url"], timeout=60)
    r = client.post(
        "/api/v1/auth/login", json={"name": config["user"], "password": config["password"]}
    )
    r.raise_for_status()
    return client


def _tree_path(config: dict[str, Any], folder: str = "") -> str:
    base = f"/api/v1/datasets/{config['dataset']}/commits/{config['commit']}/tree"
    return f"{base}/{folder}" if folder else base


def _warm(config: dict[str, Any]) -> dict[str, Any]:
    """Time the first listings, and find the folders to browse (largest first)."""
    c = _session(config)
    try:
        t = time.perf_counter()
        root = c.get(_tree_path(config), params={"limit": 1000})
        root_ms = (time.perf_counter() - t) * 1000
        root.raise_for_status()
        folders = sorted(
            (i for i in root.json()["items"] if i["type"] == "folder"),
            key=lambda i: -int(i["files"]),
        )
        if not folders:
            raise SystemExit("B's root has no folders to browse")
        largest = folders[0]
        t = time.perf_counter()
        c.get(_tree_path(config, largest["name"]), params={"limit": PAGE_LIMIT}).raise_for_status()
        folder_ms = (time.perf_counter() - t) * 1000
        # Untimed: every page the load asks for, once, so the phases measure a server that
        # has been up for a while, not one compiling its templates and queries for the
        # first time.
        c.get("/api/v1/datasets").raise_for_status()
        for f in folders:
            first = c.get(_tree_path(config, f["name"]), params={"limit": PAGE_LIMIT})
            first.raise_for_status()
            cursor = first.json().get("next_cursor")
            if cursor:
                params = {"limit": PAGE_LIMIT, "cursor": cursor}
                c.get(_tree_path(config, f["name"]), params=params).raise_for_status()
            page = f"/datasets/{config['dataset']}/tree/{config['commit']}/{f['name']}"
            c.get(page).raise_for_status()
    finally:
        c.close()
    return {
        "root_ms": root_ms,
        "folder_ms": folder_ms,
        "folders": [f["name"] for f in folders],
        "largest": largest["name"],
        "largest_files": largest["files"],
    }


class _Lean:
    """A logged-in person's keep-alive HTTP/1.1 connection, with the session's cookie.

    The load runs on the cores it measures: httpx spends ~2 ms of CPU a request here,
    http.client a fraction of that, so these clients take less from the servers they time.
    """

    def __init__(self, url: str, cookie: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.address = (host, int(port or 80))
        self.headers = {"Cookie": cookie}
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str, params: dict[str, Any] | None = None) -> tuple[int, bytes]:
        target = f"{path}?{urlencode(params)}" if params else path
        for attempt in (1, 2):  # a keep-alive connection the server closed: once more
            if self.conn is None:
                self.conn = http.client.HTTPConnection(*self.address, timeout=30)
            try:
                self.conn.request("GET", target, headers=self.headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _lean_session(config: dict[str, Any]) -> _Lean:
    client = _session(config)
    try:
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    finally:
        client.close()
    return _Lean(config["url"], cookie)


def _load(config: dict[str, Any]) -> dict[str, Any]:
    """``clients`` threads, each a logged-in person browsing, until the time or count is up.

    Logs every client in, prints "ready", waits for "go" on stdin, then runs;
    returns every request's (kind, milliseconds, ok).
    """
    clients, seconds = int(config["clients"]), float(config["seconds"])
    think_min, think_max = (float(x) for x in config["think"])
    folders: list[str] = config["folders"]
    sessions = [_lean_session(config) for _ in range(clients)]  # log in before the clock
    results: list[list[tuple[str, float, bool]]] = [[] for _ in range(clients)]
    samples: list[str] = []
    start = threading.Barrier(clients + 1)

    def person(i: int) -> None:
        rng = random.Random(int(config.get("seed", 0)) + i)
        c, out = sessions[i], results[i]
        dataset, commit = config["dataset"], config["commit"]

        def get(kind: str, path: str, **params: Any) -> bytes | None:
            t = time.perf_counter()
            status, body = 0, b""
            try:
                status, body = c.get(path, params or None)
            except (http.client.HTTPException, OSError) as exc:
                if len(samples) < 10:
                    samples.append(f"{kind}: {type(exc).__name__}: {exc}")
            out.append((kind, (time.perf_counter() - t) * 1000, status == 200))
            if status and status != 200 and len(samples) < 10:
                samples.append(f"{kind}: HTTP {status} {body[:200]!r}")
            return body if status == 200 else None

        def pause() -> bool:
            """Think, then say whether there is time and count left for another request."""
            if think_max:
                time.sleep(rng.uniform(think_min, think_max))
            return time.monotonic() < deadline and len(out) < config["max_requests"]

        start.wait()
        deadline = time.monotonic() + seconds
        if think_max:  # people do not all click at the same instant: start spread out
            time.sleep(rng.uniform(0, think_max))
        while time.monotonic() < deadline and len(out) < config["max_requests"]:
            get("datasets list (API)", "/api/v1/datasets")
            if not pause():
                break
            get("root folder (API)", _tree_path(config), limit=PAGE_LIMIT)
            if not pause():
                break
            folder = rng.choice(folders)
            page = get("folder page 1 (API)", _tree_path(config, folder), limit=PAGE_LIMIT)
            if not pause():
                break
            cursor = json.loads(page).get("next_cursor") if page is not None else None
            if cursor:
                get(
                    "folder page 2 (API)",
                    _tree_path(config, folder),
                    limit=PAGE_LIMIT,
                    cursor=cursor,
                )
                if not pause():
                    break
            get("folder page (HTML)", f"/datasets/{dataset}/tree/{commit}/{folder}")
            if not pause():
                break

    threads = [threading.Thread(target=person, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    # The load generator must not pause itself: a full collection here would stall all its
    # clients at once and be measured as the server's latency. The phase is bounded in
    # time and count, and its garbage is freed by reference counting.
    gc.collect()
    gc.freeze()
    gc.disable()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    gc.enable()
    for s in sessions:
        s.close()
    return {
        "samples": [[k, round(ms, 3), ok] for rs in results for k, ms, ok in rs],
        "seconds": elapsed,
        "error_samples": samples,
    }


def _summary(durations_ms: list[float]) -> dict[str, float]:
    ms = sorted(durations_ms)
    if not ms:
        return {"n": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    return {
        "n": len(ms),
        "p50_ms": _quantile(ms, 0.50),
        "p99_ms": _quantile(ms, 0.99),
        "max_ms": ms[-1],
    }


def _quantile(sorted_ms: list[float], q: float) -> float:
    """The nearest-rank quantile: the value that q of the samples are at or below."""
    rank = max(1, -(-len(sorted_ms) * q // 1))
    return sorted_ms[int(rank) - 1]


_TIMING = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const fcp = performance.getEntriesByName("first-contentful-paint")[0];
  return {response_end: nav.responseEnd, dcl: nav.domContentLoadedEventEnd,
          fcp: fcp ? fcp.startTime : -1};
}"""


def _render(config: dict[str, Any]) -> dict[str, Any]:
    """Open each page in a fresh browser context, RENDER_REPEATS times; time it to the list."""
    from playwright.sync_api import sync_playwright

    base = config["url"]
    dataset, commit = config["dataset"], config["commit"]
    pages = {
        "root": (f"/datasets/{dataset}/tree/{commit}", "#entries tbody tr"),
        "folder": (f"/datasets/{dataset}/tree/{commit}/{config['largest']}", "#entries tbody tr"),
        "hub": (f"/datasets/{dataset}", "ol.commits > li"),
    }
    out: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for key, (path, selector) in pages.items():
                walls, timings = [], []
                for _ in range(RENDER_REPEATS):
                    context = browser.new_context(base_url=base)
                    try:
                        login = context.request.post(
                            "/api/v1/auth/login",
                            data={"name": config["user"], "password": config["password"]},
                        )
                        if not login.ok:
                            raise SystemExit(f"login failed: {login.status}")
                        page = context.new_page()
                        t = time.perf_counter()
                        response = page.goto(path, wait_until="commit")
                        page.wait_for_selector(selector, state="visible")
                        walls.append((time.perf_counter() - t) * 1000)
                        if response is None or response.status != 200:
                            raise SystemExit(f"{path}: HTTP {response and response.status}")
                        page.wait_for_load_state("load")
                        timings.append(page.evaluate(_TIMING))
                    finally:
                        context.close()
                out[key] = {
                    "first_ms": walls[0],
                    "median_ms": statistics.median(walls),
                    "all_ms": walls,
                    "response_end_ms": statistics.median(t["response_end"] for t in timings),
                    "dcl_ms": statistics.median(t["dcl"] for t in timings),
                    "fcp_ms": statistics.median(t["fcp"] for t in timings),
                }
        finally:
            browser.close()
    return out


def _child_main(op: str, config_json: str) -> None:
    config = json.loads(config_json)
    ops = {"setup": _setup, "warm": _warm, "load": _load, "render": _render}
    if op not in ops:
        raise SystemExit(f"unknown op {op!r}")
    print(json.dumps(ops[op](config)), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _child_main(sys.argv[1], sys.argv[2])
