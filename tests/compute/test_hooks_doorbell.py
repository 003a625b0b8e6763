"""Attempt hooks (what runs beside each attempt) and the doorbell (runners woken by
changes, not by their next poll): real runners, real processes, real catalogs."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from conftest import World

from lakecache.cache.clock import SystemClock
from lakecache.cache.service import CacheService
from lakecache.compute import hooks
from lakecache.compute.doorbell import Listener, ring
from lakecache.compute.hooks import AttemptContext
from lakecache.compute.model import InputSpec, JobRecord, Resources
from lakecache.compute.runner import JobRunner
from lakecache.compute.store import ComputeStore
from lakecache.data.hub import Hub
from lakecache.settings import Settings

ONE_CPU = Resources(1000, 10**9)
SRC = Path(__file__).resolve().parents[2] / "src"
COMPUTE = SRC / "lakecache" / "compute"


def test_compute_imports_nothing_of_tracking() -> None:
    """Tracking sits above compute: it hooks into attempts, compute never imports it."""
    offenders = []
    for path in sorted(COMPUTE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("lakecache.tracking")]
    assert offenders == []
    # And at run time: the runner, the store and the backends load no tracking module.
    code = (
        "import sys, lakecache.compute.runner, lakecache.compute.store; "
        "print([m for m in sys.modules if m.startswith('lakecache.tracking')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_tracking_is_found_as_an_entry_point() -> None:
    from lakecache.tracking.jobs import attempt_hook

    assert attempt_hook in hooks.hooks()


class _Recorder:
    """A hook that writes down every call it gets, and gives the job a variable."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def begin(self, ctx: AttemptContext) -> _Recorder:
        self.calls.append(("begin", (ctx.job.id, ctx.attempt, ctx.site, ctx.remote)))
        return self

    def env(self) -> Mapping[str, str]:
        self.calls.append(("env", None))
        return {"HOOKED": "yes"}

    def on_input(self, spec: InputSpec, seconds: float, *, hit: bool | None) -> None:
        self.calls.append(("input", spec.name))

    def on_start(self) -> None:
        self.calls.append(("start", None))

    def on_end(self, state: str, exit_code: int | None) -> None:
        self.calls.append(("end", (state, exit_code)))


class _Broken:
    """A hook that fails at every step: the job must not notice."""

    def begin(self, ctx: AttemptContext) -> _Broken:
        return self

    def env(self) -> Mapping[str, str]:
        raise RuntimeError("env broke")

    def on_input(self, spec: InputSpec, seconds: float, *, hit: bool | None) -> None:
        raise RuntimeError("input broke")

    def on_start(self) -> None:
        raise RuntimeError("start broke")

    def on_end(self, state: str, exit_code: int | None) -> None:
        raise RuntimeError("end broke")


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    rec = _Recorder()
    remove = [hooks.register(_Broken()), hooks.register(rec)]
    yield rec
    for r in remove:
        r()


def _runner(hub: Hub, site: str, tmp_path: Path, interval: float) -> JobRunner:
    return JobRunner(
        CacheService(hub, clock=SystemClock(), poll_every=0.05),
        site,
        interval=interval,
        heartbeat_every=0.2,
        jobs_root=tmp_path / f"jobs-{site}",
    )


def _submit(store: ComputeStore, *command: str) -> JobRecord:
    job = store.submit(
        "burst", command, request=ONE_CPU, submitted_by="tester", now=SystemClock().now()
    )
    store.admit(job.id, now=SystemClock().now())
    return job


def _until_done(store: ComputeStore, job_id: int, timeout: float = 30) -> JobRecord:
    deadline = time.monotonic() + timeout
    while not (job := store.get_job(job_id)).done and time.monotonic() < deadline:
        time.sleep(0.01)
    return job


def test_hooks_see_each_step_of_an_attempt_and_a_failing_hook_fails_nothing(
    hub: Hub, store: ComputeStore, world: World, tmp_path: Path, recorder: _Recorder
) -> None:
    runner = _runner(hub, "onprem", tmp_path, interval=0.05)
    try:
        job = _submit(store, "sh", "-c", 'echo "hooked=$HOOKED"')
        deadline = time.monotonic() + 30
        while not store.get_job(job.id).done and time.monotonic() < deadline:
            runner.run_once()
            time.sleep(0.02)
        assert runner.wait_idle(30)
    finally:
        runner.close()
    done = store.get_job(job.id)
    assert (done.state, done.exit_code) == ("succeeded", 0)
    assert recorder.calls == [
        ("begin", (job.id, 1, "onprem", False)),
        ("env", None),
        ("start", None),
        ("end", ("succeeded", 0)),
    ]
    assert "hooked=yes" in (Path(done.workdir or "") / "job.log").read_text()


class _Warmed:
    """A hook with a warm-up: which threads called it, and when."""

    def __init__(self) -> None:
        self.warmed: list[str] = []
        self.done = threading.Event()

    def warm(self) -> None:
        self.warmed.append(threading.current_thread().name)
        self.done.set()

    def begin(self, ctx: AttemptContext) -> None:
        return None  # sits every attempt out


class _BrokenWarm:
    def warm(self) -> None:
        raise RuntimeError("warm broke")

    def begin(self, ctx: AttemptContext) -> None:
        return None


def test_a_runner_warms_its_hooks_once_off_its_loop_and_a_failing_warm_up_stops_nothing(
    hub: Hub, store: ComputeStore, world: World, tmp_path: Path
) -> None:
    warmed = _Warmed()
    remove = [hooks.register(_BrokenWarm()), hooks.register(warmed)]
    runner = _runner(hub, "onprem", tmp_path, interval=0.05)
    loop = threading.Thread(target=runner.run_forever, daemon=True)
    try:
        loop.start()
        assert warmed.done.wait(30)
        # One at a time: the queue bursts to another site (no runner here) when onprem is full.
        ended = [_until_done(store, _submit(store, "true").id) for _ in range(3)]
    finally:
        runner.stop_event.set()
        loop.join(60)
        for r in remove:
            r()
    assert [(j.state, j.exit_code) for j in ended] == [("succeeded", 0)] * 3
    assert warmed.warmed == ["lakecache-hooks-warm"]  # once, on its own thread


_SUBMIT = """
import sys
from pathlib import Path
from lakecache.cache.clock import SystemClock
from lakecache.compute.model import Resources
from lakecache.compute.store import ComputeStore
from lakecache.data.hub import Hub
from lakecache.settings import Settings
hub = Hub(Settings(home=Path(sys.argv[1]), catalog_url=sys.argv[2], author="t"), remote=False)
store = ComputeStore(hub.catalog)
now = SystemClock().now()
job = store.submit("burst", ["true"], request=Resources(1000, 10**9), submitted_by="t", now=now)
store.admit(job.id, now=now)
print(job.id)
hub.close()
"""


def test_a_runner_between_polls_is_woken_by_a_job_submitted_in_another_process(
    compute_settings: Settings, hub: Hub, store: ComputeStore, world: World, tmp_path: Path
) -> None:
    """The ring crosses processes: a file beside a SQLite catalog, NOTIFY on PostgreSQL.
    The runner polls once every ten minutes, so a start within a minute is the bell's."""
    runner = _runner(hub, "onprem", tmp_path, interval=600)
    thread = threading.Thread(target=runner.run_forever, daemon=True)
    thread.start()
    try:
        time.sleep(1)  # its first pass is over: it waits on the bell now
        t0 = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", _SUBMIT, str(compute_settings.home), hub.settings.catalog_url],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        )
        job = _until_done(store, int(out.stdout.strip()), timeout=60)
        assert (job.state, job.site) == ("succeeded", "onprem"), job.reason
        assert time.monotonic() - t0 < 60
    finally:
        runner.stop_event.set()
        thread.join(30)
    assert not thread.is_alive()


def test_a_listener_hears_a_ring_and_times_out_without_one(hub: Hub, world: World) -> None:
    listener = Listener(hub.catalog)
    try:
        t0 = time.monotonic()
        assert listener.wait(0.2) is False
        assert time.monotonic() - t0 >= 0.2
        threading.Timer(0.1, ring, args=(hub.catalog,)).start()
        assert listener.wait(30) is True
        stop = threading.Event()
        threading.Timer(0.1, stop.set).start()
        t0 = time.monotonic()
        assert listener.wait(30, stop) is False
        assert time.monotonic() - t0 < 20
    finally:
        listener.close()


def test_a_site_agent_loads_no_web_server() -> None:
    """An agent starts its jobs sooner without FastAPI and the dashboard (seconds of CPU):
    what it imports of lakecache.server (its log settings) loads none of it, while the
    package's names still load on first use."""
    code = (
        "import sys, lakecache.cli.main, lakecache.cli.agent, lakecache.server.logs, "
        "lakecache.cache.agent, lakecache.compute.runner, lakecache.flows.engine; "
        "print(sorted(m for m in ('fastapi', 'lakecache.server.app') if m in sys.modules)); "
        "from lakecache.server import create_app, ControlPlane; "
        "print(callable(create_app), 'fastapi' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:2] == ["[]", "True True"]


def test_a_hook_is_warmed_once_per_process_however_often_warm_up_is_asked(hub: Hub) -> None:
    """An agent warms its hooks before it says it runs, and its runner asks again as its
    loop starts: the second call finds nothing left to do; a hook registered since is
    warmed by the next call."""
    first, later = _Warmed(), _Warmed()
    remove = [hooks.register(first)]
    try:
        hooks.warm_up().join(30)
        hooks.warm_up().join(30)
        remove.append(hooks.register(later))
        hooks.warm_up().join(30)
        hooks.warm_up().join(30)
    finally:
        for r in remove:
            r()
    assert first.warmed == ["lakecache-hooks-warm"]
    assert later.warmed == ["lakecache-hooks-warm"]


def test_rings_in_a_burst_are_heard_together_not_a_pass_each(
    hub: Hub, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every job placed or ended anywhere rings every runner: in a burst (rings during its
    passes) a runner runs a pass at most every PASS_GAP seconds, not one per ring; a lone
    ring still wakes it at once (well before its interval)."""
    from lakecache.compute import runner as runner_module

    runner = _runner(hub, "onprem", tmp_path, interval=30.0)
    passes: list[float] = []

    def counted() -> int:  # the loop's pace alone: a pass that takes 5 ms, and does nothing
        passes.append(time.monotonic())
        time.sleep(0.005)
        return 0

    monkeypatch.setattr(runner, "run_once", counted)
    loop = threading.Thread(target=runner.run_forever, daemon=True)
    try:
        loop.start()
        deadline = time.monotonic() + 30
        while not passes and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        before = len(passes)
        rang_at = time.monotonic()
        ring(hub.catalog)  # a lone ring: a pass at once
        while len(passes) == before and time.monotonic() < deadline:
            time.sleep(0.005)
        assert passes[-1] - rang_at < 5.0  # not the 30 s interval
        time.sleep(0.2)
        before, start = len(passes), time.monotonic()
        while time.monotonic() - start < 1.0:  # a ring every millisecond for a second
            ring(hub.catalog)
            time.sleep(0.001)
        burst = len(passes) - before
    finally:
        runner.stop_event.set()
        loop.join(60)
    most = 1.0 / runner_module.PASS_GAP + 2
    assert 1 <= burst <= most, f"{burst} passes for a second of rings (at most {most:.0f})"
