"""Tracking without a line of code: a run for every attempt of every job.

Tracking registers an attempt hook (:mod:`lakecache.compute.hooks`, entry point
``lakecache.attempt_hooks``): the job runner makes one :class:`AttemptTracker`
per attempt through it and calls it at each step; the tracker records, in the
attempt's run:

* the command and argv, the image, the agent's Python and packages (the job's
  own environment when it is the same interpreter), and the code version
  (git commit, branch and uncommitted diff of the job's working folder when it
  is a checkout, or the image);
* each dataset input: commit, cache or stream, whether a ready cache was
  there before the job asked (hit) or was filled for it (miss), and the time
  it took to get ready;
* the job's output (stdout and stderr, as the backend writes them to the
  attempt's log) as the log ``output``, shipped every few seconds, so a
  killed job's record keeps what it printed;
* system metrics every second (CPU, memory, disk and network I/O, GPUs), once the
  job has run half a second (:data:`LIVE_AFTER`);
* the exit code, the end state and the duration.

The job itself finds its run in ``LAKECACHE_RUN_ID``: ``lakecache.tracking.current()``
logs into it (through the server with the job's own token, or, without a
server, into a spool folder this tracker drains).

A tracking failure never fails a job: every step catches, logs and goes on.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakecache.compute.together import together
from lakecache.errors import LakecacheError
from lakecache.tracking.sdk import (
    RUN_ID_ENV,
    SPOOL_ENV,
    DirectBackend,
    HttpBackend,
    Run,
    RunBackend,
)
from lakecache.tracking.store import JOBS_EXPERIMENT, TrackingStore

if TYPE_CHECKING:
    from lakecache.compute.hooks import AttemptContext
    from lakecache.compute.model import InputSpec, JobRecord
    from lakecache.tracking.model import RunRecord

log = logging.getLogger("lakecache.tracking")

#: A job names its experiment with this variable in its environment (default ``jobs``).
EXPERIMENT_ENV = "LAKECACHE_EXPERIMENT"
#: Flows set these in a task's environment (the flow run's id and the task's name).
FLOW_RUN_ENV = "LAKECACHE_FLOW_RUN"
FLOW_TASK_ENV = "LAKECACHE_FLOW_TASK"
#: A job names the folder of its code (a git checkout) with this variable.
CODE_DIR_ENV = "LAKECACHE_CODE_DIR"
#: The log stream of a job's output (stdout and stderr, as its backend interleaves them).
OUTPUT_LOG = "output"
#: Seconds between shipments of the job's output and drains of its spool.
SHIP_EVERY = 5.0
_CHUNK = 4 << 20


class _TrackingHook:
    """The attempt hook tracking registers (entry point ``lakecache.attempt_hooks``)."""

    def warm(self) -> None:
        """Read this process's environment once, before its first attempt (seconds of CPU:
        every package's metadata), so no attempt's run waits for it."""
        from lakecache.tracking.env import environment

        environment()

    def begin(self, ctx: AttemptContext) -> AttemptTracker:
        return AttemptTracker(
            ctx.hub, ctx.job, ctx.attempt, ctx.workdir, remote=ctx.remote, image=ctx.image
        )


#: Registered as an entry point; see :mod:`lakecache.compute.hooks`.
attempt_hook = _TrackingHook()

#: A job's run goes live (system sampler, output shipped as it grows) once its command
#: has run this long: most short jobs end before and pay for neither.
LIVE_AFTER = 0.5


def job_run(
    store: TrackingStore,
    job: JobRecord,
    attempt: int,
    *,
    command: list[str] | None = None,
    env: dict[str, Any] | None = None,
    code: dict[str, Any] | None = None,
) -> RunRecord:
    """The run of ``attempt`` of ``job``, made on first ask (the same run after)."""
    for run in store.runs_of_job(job.id):
        if run.job_attempt == attempt:
            if env or code:  # asked again with what was learnt since: recorded
                store.update_run(run.id, env=env or run.env, code=code or run.code)
                return store.get_run(run.id)
            return run
    return store.get_run(_insert_run(store, job, attempt, command=command, env=env, code=code))


def _insert_run(
    store: TrackingStore,
    job: JobRecord,
    attempt: int,
    *,
    command: list[str] | None = None,
    env: dict[str, Any] | None = None,
    code: dict[str, Any] | None = None,
) -> int:
    """Make the run of a new attempt with one insert (its experiment made first only if
    it does not exist yet). Returns its id."""
    import json

    from sqlalchemy import bindparam, select
    from sqlalchemy import exc as sa_exc

    from lakecache.tracking import tables as tt
    from lakecache.tracking.store import now

    job_env = dict(job.env)
    name = job_env.get(EXPERIMENT_ENV) or JOBS_EXPERIMENT
    global _run_insert
    if _run_insert is None:  # built once: every attempt of every job makes one
        e, r = tt.tracking_experiments, tt.tracking_runs
        _run_insert = r.insert().values(
            experiment_id=select(e.c.id)
            .where(e.c.name == bindparam("b_experiment"))
            .scalar_subquery(),
            **{c: bindparam(f"b_{c}", type_=r.c[c].type) for c in _RUN_COLUMNS},
        )
    values = {
        "b_experiment": name,
        "b_name": f"job-{job.id}-{attempt}",
        "b_user_name": job.submitted_by,
        "b_status": "running",
        "b_started_at": now(),
        "b_command": json.dumps(command if command is not None else list(job.command)),
        "b_env": _env_json(env),
        "b_code": json.dumps(code or {}),
        "b_job_id": job.id,
        "b_job_attempt": attempt,
        "b_flow_run": job_env.get(FLOW_RUN_ENV),
        "b_flow_task": job_env.get(FLOW_TASK_ENV),
    }
    statement = _run_insert

    def insert(conn: Any) -> Any:
        res = conn.execute(statement, values)
        (new_id,) = res.inserted_primary_key or (None,)
        return new_id

    for first in (True, False):
        try:
            run_id = together.write(store._c, insert)
            break
        except sa_exc.IntegrityError:
            if not first:
                raise
            store.get_or_create_experiment(name)  # its first run: make it, then again
    assert run_id is not None
    return int(run_id)


#: The insert of a job attempt's run (built on first use), its columns besides the
#: experiment, and the environment last written as JSON (this process's, the same dict
#: for every attempt: dumped once).
_run_insert: Any = None
_RUN_COLUMNS = (
    "name",
    "user_name",
    "status",
    "started_at",
    "command",
    "env",
    "code",
    "job_id",
    "job_attempt",
    "flow_run",
    "flow_task",
)
_env_dumped: tuple[Any, str] | None = None


def _env_json(env: dict[str, Any] | None) -> str:
    import json

    global _env_dumped
    if not env:
        return "{}"
    last = _env_dumped
    if last is not None and last[0] is env:
        return last[1]
    text = json.dumps(env)
    _env_dumped = (env, text)
    return text


def _end_run(store: TrackingStore, run_id: int, status: str, exit_code: int | None) -> None:
    """What TrackingStore.end_run does, in a transaction shared with other attempts' writes."""
    from sqlalchemy import update

    from lakecache.tracking import tables as tt
    from lakecache.tracking.store import now

    values: dict[str, Any] = {"status": status, "ended_at": now()}
    if exit_code is not None:
        values["exit_code"] = exit_code
    together.write(
        store._c,
        lambda conn: conn.execute(
            update(tt.tracking_runs).where(tt.tracking_runs.c.id == run_id).values(**values)
        ),
    )


class _Later:
    """One thread for the deferred steps of every attempt's tracker (describe the
    environment, go live): no thread per attempt for work most short jobs never need."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = 0
        self._thread: threading.Thread | None = None

    def call(self, delay: float, step: Any) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._heap, (time.monotonic() + delay, self._seq, step))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="lakecache-track-later", daemon=True
                )
                self._thread.start()
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(wait)
                _, _, step = heapq.heappop(self._heap)
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - each step catches its own; belt and braces
                log.warning("a deferred tracking step failed: %s", exc)


_later = _Later()


class AttemptTracker:
    """The run of one job attempt, as its runner sees it (an attempt observer, see
    :mod:`lakecache.compute.hooks`). Every method is safe to call whatever happened
    before (a tracker that could not start does nothing).

    Cheap for short jobs: its run is made with one insert (with the environment, once
    this process has read it); the system sampler and the shipping of the output as it
    grows start only once the command has run :data:`LIVE_AFTER` seconds; reading the
    environment and the code version, when needed, runs off the path to the start.
    """

    def __init__(
        self,
        hub: Any,
        job: JobRecord,
        attempt: int,
        workdir: Path,
        *,
        remote: bool,
        image: str | None = None,
        sample_every: float = 1.0,
    ) -> None:
        self._finished = False
        self.job = job
        self.attempt = attempt
        self.workdir = workdir
        self.spool = workdir / "tracking"
        self.run_id: int | None = None
        self.backend: RunBackend | None = None
        #: The Run the sampler logs through, made when the attempt goes live.
        self.run: Run | None = None
        self._shipped = 0
        self._ship_lock = threading.Lock()
        self._live_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._described = threading.Event()
        self._sample_every = sample_every
        self._store: TrackingStore | None = None
        self._hub = hub
        self._image = image
        env, code = self._known_description()
        try:
            if remote:
                from lakecache.client.login import find_server

                found = find_server(hub.settings)
                assert found is not None
                http = HttpBackend(*found)
                body: dict[str, Any] = {
                    "job_id": job.id,
                    "attempt": attempt,
                    "command": list(job.command),
                }
                if env is not None:
                    body.update(env=env, code=code)
                self.run_id = int(
                    http.http.request("POST", "/tracking/job-runs", json=body).json()["id"]
                )
                self.backend = http
            else:
                direct = DirectBackend(hub)
                # The lake only once the job's output or artifacts are stored (opening it
                # costs seconds of CPU: most short jobs never need it).
                self._store = direct.store
                self.run_id = _insert_run(direct.store, job, attempt, env=env, code=code)
                self.backend = direct
        except Exception as exc:  # noqa: BLE001 - tracking must never fail the job
            log.warning("job %d attempt %d: no run recorded: %s", job.id, attempt, exc)
            return
        if env is not None:
            self._described.set()
        else:  # recorded beside the attempt's start, not before it
            _later.call(0, lambda: self._safely(self._describe, then=self._described.set))

    def _known_description(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The environment and code version if they cost nothing now (the environment
        read already by this process, no code folder to ask git about), else (None, {})."""
        from lakecache.tracking.env import _environment, environment

        if _environment.cache_info().currsize == 0 or code_folder(self.job) is not None:
            return None, {}
        code = {"kind": "image", "image": self._image} if self._image else {}
        return environment(), code

    def _describe(self) -> None:
        from lakecache.tracking.env import code_version, environment

        env = environment()
        folder = code_folder(self.job)
        code = code_version(folder, image=self._image) if folder is not None else {}
        if self._image and not code:
            code = {"kind": "image", "image": self._image}
        assert self.run_id is not None
        if self._store is not None:
            self._store.update_run(self.run_id, env=env, code=code)
        else:
            assert isinstance(self.backend, HttpBackend)
            body = {
                "job_id": self.job.id,
                "attempt": self.attempt,
                "command": list(self.job.command),
                "env": env,
                "code": code,
            }
            self.backend.http.request("POST", "/tracking/job-runs", json=body)

    # -- the observer ----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """What the job's environment gets: its run, and (without a server) its spool."""
        if self.run_id is None:
            return {}
        out = {RUN_ID_ENV: str(self.run_id)}
        if self._store is not None:
            try:
                self.spool.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("job %d: no spool for its own logging: %s", self.job.id, exc)
                return {}
            out[SPOOL_ENV] = str(self.spool)
        return out

    def on_input(self, spec: InputSpec, seconds: float, *, hit: bool | None) -> None:
        """An input is ready: cached (``hit``: a ready cache was there already) or streamed."""
        backend, run_id = self.backend, self.run_id
        if run_id is None or backend is None:
            return
        fields = {
            "dataset": spec.dataset,
            "commit_id": spec.commit_id,
            "source": "cache" if spec.mode == "cached" else "stream",
            "hit": hit if spec.mode == "cached" else None,
            "fill_seconds": seconds,
            "reader": "job input",
        }
        self._safely(lambda: backend.record_input(run_id, fields))

    def on_start(self) -> None:
        """The command started: once it has run :data:`LIVE_AFTER` s, sample the machine
        and ship the output as it grows."""
        if self.run_id is not None:
            _later.call(LIVE_AFTER, lambda: self._safely(self._go_live))

    def _go_live(self) -> None:
        from lakecache.tracking.sampler import SystemSampler

        with self._live_lock:
            if self._finished or self.run is not None or self.backend is None:
                return
            assert self.run_id is not None
            run = Run(self.run_id, self.backend, owned=False, spool=self.spool / "retry")
            run._sampler = SystemSampler(run.log_system, self._sample_every).start()
            self.run = run
            self._thread = threading.Thread(
                target=self._loop, name=f"lakecache-track-{self.job.id}", daemon=True
            )
            self._thread.start()

    def on_end(self, state: str, exit_code: int | None) -> None:
        """The attempt ended: last output and points, then the run's end and exit code.
        Only the first call counts."""
        with self._live_lock:
            if self.run_id is None or self._finished:
                return
            self._finished = True
        run_id = self.run_id
        self._described.wait(60)  # its environment is recorded before its end
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._ship_output()
        self._drain()
        status = {"succeeded": "finished", "cancelled": "killed"}.get(state, "failed")
        if self.run is not None:
            self._safely(self.run.end)  # not owned: stops the sampler and flushes
        self._safely(lambda: self._end(run_id, status, exit_code))
        if self.backend is not None:
            self._safely(self.backend.close)

    def _end(self, run_id: int, status: str, exit_code: int | None) -> None:
        if self._store is not None:
            _end_run(self._store, run_id, status, exit_code)
        else:
            assert isinstance(self.backend, HttpBackend)
            self.backend.http.request(
                "POST",
                f"/tracking/runs/{run_id}/end",
                json={"status": status, "exit_code": exit_code},
            )

    def _loop(self) -> None:
        while not self._stop.wait(SHIP_EVERY):
            self._ship_output()
            self._drain()

    def _ship_output(self) -> None:
        path = self.workdir / "job.log"
        run_id = self.run_id
        if run_id is None:
            return
        with self._ship_lock:
            try:
                with path.open("rb") as f:
                    f.seek(self._shipped)
                    while data := f.read(_CHUNK):
                        self._append(run_id, data)
                        self._shipped += len(data)
            except FileNotFoundError:
                return
            except (LakecacheError, OSError) as exc:
                log.warning("job %d: its output was not shipped yet: %s", self.job.id, exc)

    def _append(self, run_id: int, data: bytes) -> None:
        if self._store is not None:
            from lakecache.tracking.objects import append_log

            append_log(self._store, self._hub.lake, run_id, OUTPUT_LOG, data)
        else:
            assert isinstance(self.backend, HttpBackend)
            self.backend.http.request(
                "PUT",
                f"/tracking/runs/{run_id}/logs/{OUTPUT_LOG}",
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )

    def _drain(self) -> None:
        """Without a server: store what the job's SDK spooled (batches, inputs, artifacts)."""
        if self._store is None or self.run_id is None:
            return
        try:
            if not any(self.spool.iterdir()):
                return  # the job logged nothing itself
        except OSError:
            return
        store, run_id = self._store, self.run_id

        def drain() -> None:
            import json

            from lakecache.tracking.objects import log_artifact
            from lakecache.tracking.sink import drain_spool

            # Inputs first: inputs.jsonl is no batch file, and drain_spool takes every *.jsonl.
            inputs = self.spool / "inputs.jsonl"
            if inputs.exists():
                taken = inputs.with_suffix(".taken")
                inputs.rename(taken)
                for line in taken.read_text().splitlines():
                    if line.strip():
                        store.record_input(run_id, **json.loads(line))
                taken.unlink()
            drain_spool(self.spool, store, run_id=run_id)
            artifacts = self.spool / "artifacts"
            if artifacts.is_dir():
                for file in sorted(p for p in artifacts.rglob("*") if p.is_file()):
                    log_artifact(
                        store, self._hub.lake, run_id, file, file.relative_to(artifacts).as_posix()
                    )
                    file.unlink()

        self._safely(drain)

    def _safely(self, step: Any, then: Any = None) -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - tracking must never fail the job
            log.warning(
                "job %d attempt %d: tracking step failed: %s", self.job.id, self.attempt, exc
            )
        finally:
            if then is not None:
                then()


def code_folder(job: JobRecord) -> Path | None:
    """Where the job's code is: ``LAKECACHE_CODE_DIR`` in its environment, else the folder
    of the first argument that names an existing file by its absolute path (``python
    /src/repo/train.py``); None when neither says (the attempt's own folder is no code)."""
    given = dict(job.env).get(CODE_DIR_ENV)
    if given:
        return Path(given)
    for arg in job.command:
        path = Path(arg)
        if path.is_absolute() and path.is_file() and path.parent.name != "bin":
            return path.parent
    return None
