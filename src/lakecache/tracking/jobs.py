"""Tracking without a line of code: a run for every attempt of every job.

The job runner (:mod:`lakecache.compute.runner`) makes one
:class:`AttemptTracker` per attempt and calls it at each step; the tracker
records, in the attempt's run:

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
* system metrics every second (CPU, memory, disk and network I/O, GPUs);
* the exit code, the end state and the duration.

The job itself finds its run in ``LAKECACHE_RUN_ID``: ``lakecache.tracking.current()``
logs into it (through the server with the job's own token, or, without a
server, into a spool folder this tracker drains).

A tracking failure never fails a job: every step catches, logs and goes on.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def for_runner(runner: Any, job: JobRecord, attempt: int, workdir: Path) -> AttemptTracker:
    """The tracker of one attempt that ``runner`` (a JobRunner) starts."""
    from lakecache.client.jobs import RemoteJobs

    try:
        image = job.image or runner._template_image(job)
    except LakecacheError:
        image = job.image
    remote = isinstance(runner.store, RemoteJobs)
    return AttemptTracker(runner.caches.hub, job, attempt, workdir, remote=remote, image=image)


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
    job_env = dict(job.env)
    return store.create_run(
        job_env.get(EXPERIMENT_ENV) or JOBS_EXPERIMENT,
        user=job.submitted_by,
        name=f"job-{job.id}-{attempt}",
        command=command if command is not None else list(job.command),
        env=env or {},
        code=code or {},
        job_id=job.id,
        job_attempt=attempt,
        flow_run=job_env.get(FLOW_RUN_ENV),
        flow_task=job_env.get(FLOW_TASK_ENV),
    )


class AttemptTracker:
    """The run of one job attempt, as its runner sees it. Every method is safe to call
    whatever happened before (a tracker that could not start does nothing)."""

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
        self.run: Run | None = None
        self._shipped = 0
        self._ship_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._describer: threading.Thread | None = None
        self._sample_every = sample_every
        self._store: TrackingStore | None = None
        self._lake: Any = None
        self._image = image
        try:
            backend: RunBackend
            body = {"job_id": job.id, "attempt": attempt, "command": list(job.command)}
            if remote:
                from lakecache.client.login import find_server

                found = find_server(hub.settings)
                assert found is not None
                http = HttpBackend(*found)
                run_id = int(
                    http.http.request("POST", "/tracking/job-runs", json=body).json()["id"]
                )
                backend = http
            else:
                direct = DirectBackend(hub)
                self._store, self._lake = direct.store, hub.lake
                run_id = job_run(direct.store, job, attempt).id
                backend = direct
            self.run = Run(run_id, backend, owned=False, spool=self.spool / "retry")
        except Exception as exc:  # noqa: BLE001 - tracking must never fail the job
            log.warning("job %d attempt %d: no run recorded: %s", job.id, attempt, exc)
            return
        # The environment (every package) and the code version take a moment to read:
        # recorded beside the attempt's start, not before it.
        self._describer = threading.Thread(
            target=self._safely, args=(self._describe,), name="lakecache-describe", daemon=True
        )
        self._describer.start()

    def _describe(self) -> None:
        from lakecache.tracking.env import code_version, environment

        env = environment()
        folder = code_folder(self.job)
        code = code_version(folder, image=self._image) if folder is not None else {}
        if self._image and not code:
            code = {"kind": "image", "image": self._image}
        run = self.run
        assert run is not None
        if self._store is not None:
            self._store.update_run(run.id, env=env, code=code)
        else:
            assert isinstance(run.backend, HttpBackend)
            body = {
                "job_id": self.job.id,
                "attempt": self.attempt,
                "command": list(self.job.command),
                "env": env,
                "code": code,
            }
            run.backend.http.request("POST", "/tracking/job-runs", json=body)

    @property
    def run_id(self) -> int | None:
        return None if self.run is None else self.run.id

    def job_env(self) -> dict[str, str]:
        """What the job's environment gets: its run, and (without a server) its spool."""
        if self.run is None:
            return {}
        out = {RUN_ID_ENV: str(self.run.id)}
        if self._store is not None:
            try:
                self.spool.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("job %d: no spool for its own logging: %s", self.job.id, exc)
                return {}
            out[SPOOL_ENV] = str(self.spool)
        return out

    def input_ready(self, spec: InputSpec, seconds: float, *, hit: bool | None) -> None:
        """An input is ready: cached (``hit``: a ready cache was there already) or streamed."""
        if self.run is None:
            return
        fields = {
            "dataset": spec.dataset,
            "commit_id": spec.commit_id,
            "source": "cache" if spec.mode == "cached" else "stream",
            "hit": hit if spec.mode == "cached" else None,
            "fill_seconds": seconds,
            "reader": "job input",
        }
        self._safely(lambda: self.run.backend.record_input(self.run.id, fields))  # type: ignore[union-attr]

    def started(self) -> None:
        """The command started: sample the machine, ship the output as it grows."""
        if self.run is None:
            return
        from lakecache.tracking.sampler import SystemSampler

        def begin() -> None:
            assert self.run is not None
            self.run._sampler = SystemSampler(self.run.log_system, self._sample_every).start()
            self._thread = threading.Thread(
                target=self._loop, name=f"lakecache-track-{self.job.id}", daemon=True
            )
            self._thread.start()

        self._safely(begin)

    def finish(self, state: str, exit_code: int | None) -> None:
        """The attempt ended: last output and points, then the run's end and exit code.
        Only the first call counts."""
        if self.run is None or self._finished:
            return
        self._finished = True
        if self._describer is not None:
            self._describer.join()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._ship_output()
        self._drain()
        run = self.run
        status = {"succeeded": "finished", "cancelled": "killed"}.get(state, "failed")
        self._safely(run.end)  # not owned: stops the sampler and flushes
        self._safely(lambda: self._end(run, status, exit_code))
        self._safely(run.backend.close)

    def _end(self, run: Run, status: str, exit_code: int | None) -> None:
        if self._store is not None:
            self._store.end_run(run.id, status, exit_code=exit_code)
        else:
            assert isinstance(run.backend, HttpBackend)
            run.backend.http.request(
                "POST",
                f"/tracking/runs/{run.id}/end",
                json={"status": status, "exit_code": exit_code},
            )

    def _loop(self) -> None:
        while not self._stop.wait(SHIP_EVERY):
            self._ship_output()
            self._drain()

    def _ship_output(self) -> None:
        path = self.workdir / "job.log"
        run = self.run
        if run is None:
            return
        with self._ship_lock:
            try:
                with path.open("rb") as f:
                    f.seek(self._shipped)
                    while data := f.read(_CHUNK):
                        self._append(run, data)
                        self._shipped += len(data)
            except FileNotFoundError:
                return
            except (LakecacheError, OSError) as exc:
                log.warning("job %d: its output was not shipped yet: %s", self.job.id, exc)

    def _append(self, run: Run, data: bytes) -> None:
        if self._store is not None:
            from lakecache.tracking.objects import append_log

            append_log(self._store, self._lake, run.id, OUTPUT_LOG, data)
        else:
            assert isinstance(run.backend, HttpBackend)
            run.backend.http.request(
                "PUT",
                f"/tracking/runs/{run.id}/logs/{OUTPUT_LOG}",
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )

    def _drain(self) -> None:
        """Without a server: store what the job's SDK spooled (batches, inputs, artifacts)."""
        if self._store is None or self.run is None:
            return
        store, run_id = self._store, self.run.id

        def drain() -> None:
            import json

            from lakecache.tracking.objects import log_artifact
            from lakecache.tracking.sink import drain_spool

            drain_spool(self.spool, store, run_id=run_id)
            inputs = self.spool / "inputs.jsonl"
            if inputs.exists():
                taken = inputs.with_suffix(".taken")
                inputs.rename(taken)
                for line in taken.read_text().splitlines():
                    if line.strip():
                        store.record_input(run_id, **json.loads(line))
                taken.unlink()
            artifacts = self.spool / "artifacts"
            if artifacts.is_dir():
                for file in sorted(p for p in artifacts.rglob("*") if p.is_file()):
                    log_artifact(
                        store, self._lake, run_id, file, file.relative_to(artifacts).as_posix()
                    )
                    file.unlink()

        self._safely(drain)

    def _safely(self, step: Any) -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - tracking must never fail the job
            log.warning(
                "job %d attempt %d: tracking step failed: %s", self.job.id, self.attempt, exc
            )


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


def cache_was_ready(caches: Any, spec: InputSpec, site: str) -> bool | None:
    """Whether a ready cache of the input's whole commit was at ``site`` before the job
    asked (a hit), or not (a miss: filled for it). None when it cannot be told."""
    try:
        ready = caches.topology.list_caches(site=site, dataset=spec.dataset, states=("ready",))
    except LakecacheError:
        return None
    return any(c.commit_id == spec.commit_id and c.subpath == "" for c in ready)
