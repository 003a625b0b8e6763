"""The job loop of a site's agent: take placed jobs for the site, run them, report.

One :class:`JobRunner` per agent process; several agents per site are safe,
since every step is a compare-and-swap in the catalog (see
:mod:`lakecache.compute.store`). Each pass:

1. requeues running jobs whose worker went silent (or fails them after their
   last attempt), and fails queued jobs past their queue's pending deadline;
2. admits queued jobs (of every site: any process may schedule);
3. claims the jobs placed on this site's compute, each in a thread of its own
   that prepares the inputs, starts the command on the backend, heartbeats,
   and reports the exit with the attempt's fencing token.

Inputs: a ``cached`` input is made ready on this site's volume by the
:class:`~lakecache.cache.service.CacheService` (filled here if nobody has) and
held by a lease until the job ends, so it is never evicted under the job; a
``stream`` input is, for now, pulled from the lake into the attempt's own
folder and deleted with it. The job is told each input's path in
``LAKECACHE_INPUT_<NAME>`` and writes to ``LAKECACHE_OUTPUTS``.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakecache.catalog.leader import exclusive
from lakecache.client.jobs import RemoteJobs
from lakecache.compute.backends import (
    REGISTRY,
    Backend,
    BackendError,
    LaunchSpec,
    open_backend,
)
from lakecache.compute.doorbell import Listener
from lakecache.compute.hooks import AttemptContext, Observers, warm_up
from lakecache.compute.model import InputSpec, JobRecord
from lakecache.compute.store import ComputeStore
from lakecache.errors import LakecacheError

if TYPE_CHECKING:
    from lakecache.cache.clock import Clock
    from lakecache.cache.service import CacheService
    from lakecache.data.hub import Hub

log = logging.getLogger("lakecache.jobs")

#: Variables of the agent's own environment a job inherits; the rest (tokens,
#: lake credentials) stay with the agent.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")

#: Seconds between a runner's signs of life in the catalog (well within
#: lakecache.compute.admission.RUNNER_SEEN_WITHIN).
SEEN_EVERY = 5.0

#: Seconds from the start of one pass to the next at least, when the doorbell rang
#: during the pass: in a burst of short jobs a runner's passes were back to back, each
#: finding a job or two, and most of an agent's CPU went to them.
PASS_GAP = 0.025

#: How often (by its clock) a runner's scheduler pass also looks for silent workers,
#: queued jobs past their deadline and placed jobs whose agent is down.
CHECK_EVERY = timedelta(seconds=1)

#: Seconds a runner trusts what it read of its site's compute and templates' images.
LOOKUP_TTL = 10.0

#: How an attempt ended: (final state, exit code, reason).
_Outcome = tuple[str, int | None, str | None]


class JobRunner:
    """Runs the jobs placed on one site's compute. Build one per agent process."""

    def __init__(
        self,
        caches: CacheService,
        site: str,
        *,
        backends: Mapping[str, Backend] | None = None,
        interval: float = 0.2,
        heartbeat_every: float = 2.0,
        stale_after: timedelta = timedelta(seconds=30),
        jobs_root: Path | None = None,
        worker: str | None = None,
    ) -> None:
        """Args:
        caches: the agent's cache service (its hub and clock are used too).
        site: the site whose compute this runner starts jobs on.
        backends: backend name -> backend; default, each compute resource's own
            backend, opened from its settings (``compute add --config``) on first use.
        interval: seconds between passes of :meth:`run_forever`.
        heartbeat_every: seconds between heartbeats of each running job.
        stale_after: silence after which another agent requeues a running job.
        jobs_root: where each attempt's folder (log, outputs) is made.
        worker: this runner's name in the catalog, its own alone (default
            host:pid:site:random: a server answers a claim sent again by the same
            name with the attempt that name won).

        Through a server (the hub is logged in, as the site's agent user) the
        runner works through :class:`~lakecache.client.jobs.RemoteJobs`: same
        steps, fenced by the server, and it ships each attempt's log there.
        """
        from lakecache.compute.sdk import jobs_store

        self.caches = caches
        self.site = site
        self.store = jobs_store(caches.hub)
        self.backends: Mapping[str, Backend] = backends or {}
        #: compute resource name -> its backend, opened from its config (no ``backends``).
        self._opened: dict[str, Backend] = {}
        self.interval = interval
        self.heartbeat_every = heartbeat_every
        self.stale_after = stale_after
        self.jobs_root = jobs_root or caches.hub.settings.home / "jobs"
        self.worker = worker or (
            f"{socket.gethostname()}:{os.getpid()}:{site}:{secrets.token_hex(3)}"
        )
        self.stop_event = threading.Event()
        self._threads: dict[int, threading.Thread] = {}
        #: (job, attempt) -> the job-scoped token the server minted (through a server).
        self._job_tokens: dict[tuple[int, int], str] = {}
        #: (job, attempt) -> bytes of its log sent to the server so far, and who sends.
        self._shipped: dict[tuple[int, int], list[int]] = {}
        self._ship_locks: dict[tuple[int, int], threading.Lock] = {}
        #: (job, attempt) -> the attempt's hooks (lakecache.compute.hooks; tracking's one).
        self._observers: dict[tuple[int, int], Observers] = {}
        #: (job, attempt) -> (when, detail) of its "started" entry, not written yet.
        self._pending: dict[tuple[int, int], tuple[Any, str]] = {}
        #: (job, attempt) claimed with its folder set and "preparing" in its timeline.
        self._prepared: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        #: (kind, name) -> (monotonic time read, value): compute and templates' images.
        self._lookups: dict[tuple[str, str], tuple[float, Any]] = {}
        #: When (its clock) this runner's pass last ran the checks of time (CHECK_EVERY).
        self._checked_at: datetime | None = None
        #: When this runner last said it is alive (monotonic; see SEEN_EVERY).
        self._seen_at = float("-inf")

    @property
    def clock(self) -> Clock:
        return self.caches.clock

    # -- the loop ------------------------------------------------------------------------

    def run_once(self) -> int:
        """One pass (requeue the silent, schedule, claim and start). Returns jobs started."""
        store, now = self.store, self.clock.now()
        if time.monotonic() - self._seen_at >= SEEN_EVERY:
            # A sign of life for agent-down policies: a write, so not at every pass.
            store.runner_seen(self.worker, self.site, now=now)
            self._seen_at = time.monotonic()
        # Jobs placed here since the last pass (at submit, or by another agent's pass) start
        # first: the scheduling below, which can take a while, need not delay them.
        started = self._start_placed()
        # Every agent (and so every site) schedules every queue: one process at a time does.
        with exclusive(self.caches.hub.catalog, "job-scheduler") as held:
            if held:
                budget = max(self.interval, 0.5)  # so that the jobs it places start soon
                if not isinstance(store, ComputeStore):
                    for job_id, state in store.requeue_stale(now=now, stale_after=self.stale_after):
                        log.warning("job %d: its worker went silent; now %s", job_id, state)
                    store.schedule(now=now, budget=budget)
                else:
                    # The checks of time (silent workers, deadlines, agents down) at most
                    # every CHECK_EVERY s by the clock: a burst of short jobs runs a pass
                    # per few jobs, and each check is a query that finds nothing then.
                    checks = self._checked_at is None or not (
                        timedelta(0) <= now - self._checked_at < CHECK_EVERY
                    )
                    if checks:
                        self._checked_at = now
                        for job_id, state in store.requeue_stale(
                            now=now, stale_after=self.stale_after
                        ):
                            log.warning("job %d: its worker went silent; now %s", job_id, state)
                    store.schedule(now=now, budget=budget, checks=checks)
        if held:  # jobs placed meanwhile, by this pass or another process
            started += self._start_placed()
        return started

    def _start_placed(self) -> int:
        """Claim the jobs placed on this site's compute; start each in a thread of its own."""
        store, started = self.store, 0
        jobs = []
        for job in store.placed_at(self.site, self.backends or REGISTRY):
            with self._lock:
                previous = self._threads.get(job.id)
                if previous is not None and previous.is_alive():
                    continue  # an attempt of it still ends here (a job requeued, placed again)
            jobs.append(job)
        if not jobs:
            return 0
        if isinstance(store, ComputeStore):
            # One transaction claims them all, each with its folder and "preparing" entry.
            workdirs = {j.id: str(self._workdir(j.id, j.attempt + 1)) for j in jobs}
            tokens = store.claim_many(jobs, self.worker, now=self.clock.now(), workdirs=workdirs)
            self._prepared.update(tokens.items())
        else:
            tokens = {}
            for job in jobs:
                token = store.claim(job, self.worker, now=self.clock.now())
                if token is not None:
                    tokens[job.id] = token
        for job in jobs:
            token = tokens.get(job.id)
            if token is None:
                continue  # another agent of this site took it
            if isinstance(store, RemoteJobs):
                secret = store.job_token(job.id, token)
                if secret is not None:
                    self._job_tokens[(job.id, token)] = secret
            thread = threading.Thread(
                target=self._attempt, args=(job, token), name=f"job-{job.id}", daemon=True
            )
            with self._lock:
                self._threads[job.id] = thread
            thread.start()
            started += 1
        return started

    def run_forever(self) -> None:
        """Loop until :attr:`stop_event` is set, then stop this runner's jobs (they requeue).

        Between passes it waits on the catalog's doorbell (:mod:`lakecache.compute.doorbell`):
        a job queued, placed or ended anywhere starts the next pass at once; else a pass
        runs every :attr:`interval` seconds."""
        warm_up()  # the hooks' one-time work, off the first attempts' path
        listener = Listener(self.caches.hub.catalog)
        try:
            while not self.stop_event.is_set():
                began = time.monotonic()
                try:
                    self.run_once()
                except LakecacheError as exc:
                    log.warning("job pass failed: %s", exc.message)
                if listener.wait(0):
                    # Rung during the pass: a burst (every job placed or ended anywhere
                    # rings every agent); its rings are heard together, a pass per PASS_GAP
                    # at most. A ring that finds the runner waiting is answered at once.
                    self.stop_event.wait(PASS_GAP - (time.monotonic() - began))
                else:
                    listener.wait(self.interval, self.stop_event)
        finally:
            listener.close()
        self.close()

    def running(self) -> list[int]:
        """Ids of the jobs this runner is working on now."""
        with self._lock:
            return [i for i, t in self._threads.items() if t.is_alive()]

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for this runner's jobs to end; False if some still run after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                threads = [t for t in self._threads.values() if t.is_alive()]
            if not threads:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            threads[0].join(left)

    def close(self) -> None:
        """Stop claiming; stop the jobs in flight (each is requeued for another attempt)."""
        self.stop_event.set()
        self.wait_idle()

    # -- one attempt ---------------------------------------------------------------------

    def _workdir(self, job_id: int, token: int) -> Path:
        return self.jobs_root / str(job_id) / f"attempt-{token}"

    def _attempt(self, job: JobRecord, token: int) -> None:
        store = self.store
        workdir = self._workdir(job.id, token)
        outputs = workdir / "outputs"
        outputs.mkdir(parents=True, exist_ok=True)
        state = {"verdict": "run"}
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(job.id, token, stop, state), daemon=True
        )
        beat.start()  # first: a slow step below must not make the attempt look silent
        try:
            try:
                image = job.image or self._template_image(job)
            except LakecacheError:
                image = job.image
            # The attempt's hooks (tracking makes a run of it): see lakecache.compute.hooks.
            self._observers[(job.id, token)] = Observers(
                AttemptContext(
                    hub=self.caches.hub,
                    job=job,
                    attempt=token,
                    workdir=workdir,
                    site=self.site,
                    remote=isinstance(store, RemoteJobs),
                    image=image,
                )
            )
            if (job.id, token) not in self._prepared:
                store.record(
                    job.id,
                    token,
                    "preparing",
                    f"in {workdir}",
                    now=self.clock.now(),
                    workdir=str(workdir),
                )
            outcome: _Outcome | None
            with ExitStack() as held:
                try:
                    paths = self._prepare_inputs(job, token, workdir, held)
                except LakecacheError as exc:
                    outcome = ("failed", None, f"inputs not ready: {exc.message}")
                else:
                    outcome = self._run_command(job, token, workdir, outputs, paths, state, image)
            # Reported once its inputs are released (leases, streamed copies), so a job
            # seen ended holds nothing any more; its outputs are collected first, while
            # the attempt (and its job token) is still the running one.
            if outcome is not None:
                outcome = self._collect_outputs(job, token, outputs, outcome)
                self._finish(job, token, *outcome)
        except Exception as exc:  # noqa: BLE001 - recorded on the job, which must not hang
            log.exception("job %d attempt %d", job.id, token)
            self._finish(job, token, "failed", None, f"the runner failed: {exc}")
        finally:
            stop.set()
            beat.join()
            # An attempt given back or stopped ends as cancelled for its hooks (tracking: its
            # run killed); no-op when _finish has told them already.
            observers = self._observers.pop((job.id, token), None)
            if observers is not None:
                observers.on_end("cancelled", None)
            with self._lock:
                self._prepared.discard((job.id, token))
                self._pending.pop((job.id, token), None)
                self._shipped.pop((job.id, token), None)
                self._ship_locks.pop((job.id, token), None)

    def _prepare_inputs(
        self, job: JobRecord, token: int, workdir: Path, held: ExitStack
    ) -> dict[str, Path]:
        from lakecache.data.dataset import Dataset

        paths: dict[str, Path] = {}
        for spec in job.inputs:
            t0 = time.perf_counter()
            # For the hooks: was a ready cache there before this job asked (a hit)?
            hit = self._cache_was_ready(spec) if spec.mode == "cached" else None
            if spec.mode == "cached":
                path = held.enter_context(
                    self.caches.use(
                        spec.dataset,
                        spec.commit_id,
                        site=self.site,
                        holder=f"job:{job.id}:{token}",
                    )
                )
                how = f"cache at {path}, leased while the job runs"
            else:
                path = workdir / "inputs" / spec.name
                with self._reading_hub(job, token) as hub:
                    Dataset(spec.dataset, hub=hub).pull(spec.commit_id, path)
                held.callback(shutil.rmtree, path, True)
                how = f"streamed from the lake into {path}"
            took = time.perf_counter() - t0
            self._observers[(job.id, token)].on_input(spec, took, hit=hit)
            store_ok = self.store.record(
                job.id,
                token,
                "data ready",
                f"{spec.dataset}@{spec.commit_id[:12]} ({spec.mode}) in {took:.2f} s: {how}",
                now=self.clock.now(),
            )
            if not store_ok:
                raise _Fenced
            paths[spec.env_var] = path
        return paths

    def _run_command(
        self,
        job: JobRecord,
        token: int,
        workdir: Path,
        outputs: Path,
        inputs: dict[str, Path],
        state: dict[str, str],
        image: str | None,
    ) -> _Outcome | None:
        """Start the command and wait for it; its outcome, or None if not this attempt's
        to report (stale, or given back to the queue)."""
        assert job.compute is not None
        try:
            backend = self._backend_for(job)
        except BackendError as exc:
            return ("failed", None, f"{job.compute}: {exc.message}")
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        env.update(job.env)
        env.update({k: str(p) for k, p in inputs.items()})
        env.update(
            LAKECACHE_JOB_ID=str(job.id),
            LAKECACHE_JOB_ATTEMPT=str(token),
            LAKECACHE_OUTPUTS=str(outputs),
        )
        env.update(self._job_credentials(job, token))
        env.update(self._observers[(job.id, token)].env())  # e.g. tracking's LAKECACHE_RUN_ID
        spec = LaunchSpec(
            job_id=job.id,
            attempt=token,
            command=job.command,
            env=env,
            workdir=workdir,
            log_path=workdir / "job.log",
            slot=job.slot,
            image=image,
            inputs={str(p): p for p in inputs.values()},
            timeout_seconds=job.timeout_seconds,
        )
        if state["verdict"] != "run" or self.stop_event.is_set():
            return self._stop_before_start(job, token, state["verdict"])
        try:
            handle = backend.submit(spec)
        except BackendError as exc:
            return ("failed", None, f"{backend.name}: {exc.message}")
        # "started" goes in the timeline with the time it started, but written with the
        # end for a job that ends within ~0.1 s (one transaction fewer for short jobs).
        self._pending[(job.id, token)] = (self.clock.now(), f"{backend.name}: {handle}")
        if not isinstance(self.store, ComputeStore):
            self._flush_started(job.id, token)
        self._observers[(job.id, token)].on_start()
        started = time.monotonic()
        pause = 0.002  # short jobs are seen ended soon; longer ones polled every 50 ms
        while (end := backend.poll(handle)) is None:
            if pause >= 0.05:
                self._flush_started(job.id, token)
            if job.timeout_seconds is not None and time.monotonic() - started > job.timeout_seconds:
                backend.cancel(handle)
                end = backend.poll(handle)
                return (
                    "failed",
                    end.code if end else None,
                    f"timed out after {job.timeout_seconds} s",
                )
            verdict = state["verdict"]
            if verdict != "run" or self.stop_event.is_set():
                backend.cancel(handle)
                end = backend.poll(handle)
                if verdict == "lost":
                    log.warning("job %d attempt %d is stale; stopped, not reported", job.id, token)
                    return None
                if verdict == "cancel":
                    return ("cancelled", end.code if end else None, "cancelled by request")
                self._requeue(job, token, "its agent stopped")
                return None
            time.sleep(pause)
            pause = min(0.05, pause * 2)
        if end.code == 0:
            return ("succeeded", 0, None)
        return ("failed", end.code, end.reason or f"exit code {end.code}")

    def _flush_started(self, job_id: int, token: int) -> None:
        """Write the attempt's "started" entry if it waits (at the time it started)."""
        pending = self._pending.pop((job_id, token), None)
        if pending is not None:
            self.store.record(job_id, token, "started", pending[1], now=pending[0])

    @contextmanager
    def _reading_hub(self, job: JobRecord, token: int) -> Iterator[Hub]:
        """The hub a streamed input is pulled with: through a server, one with the job's
        own token (an agent user reads only what its site caches); else the agent's."""
        secret = self._job_tokens.get((job.id, token))
        if not isinstance(self.store, RemoteJobs) or secret is None:
            yield self.caches.hub
            return
        from lakecache.data.hub import Hub

        settings = replace(self.caches.hub.settings, server_url=self.store.server_url, token=secret)
        hub = Hub(settings, remote=True)
        try:
            yield hub
        finally:
            hub.close()

    def _job_credentials(self, job: JobRecord, token: int) -> dict[str, str]:
        """LAKECACHE_SERVER and the job-scoped LAKECACHE_TOKEN the server minted for this
        attempt (through a server); never the agent's own token."""
        secret = self._job_tokens.get((job.id, token))
        if not isinstance(self.store, RemoteJobs) or secret is None:
            return {}
        return {"LAKECACHE_SERVER": self.store.server_url, "LAKECACHE_TOKEN": secret}

    def _backend_for(self, job: JobRecord) -> Backend:
        """The backend of the job's compute resource: the caller's for its kind, else the
        one opened from the resource's settings (once per resource, shared by its jobs)."""
        for c in self._site_compute(job.compute):
            if c.name != job.compute:
                continue
            if self.backends:
                return self.backends[c.backend]
            with self._lock:
                backend = self._opened.get(c.name)
                if backend is None:
                    backend = self._opened[c.name] = open_backend(c.backend, c.config)
            return backend
        raise BackendError(f"compute resource {job.compute!r} is gone from site {self.site}")

    def _site_compute(self, name: str | None) -> list[Any]:
        """This site's compute resources, read at most every :data:`LOOKUP_TTL` seconds
        (again at once when ``name`` is not among them)."""
        at, known = self._lookups.get(("compute", ""), (float("-inf"), []))
        if time.monotonic() - at > LOOKUP_TTL or not any(c.name == name for c in known):
            known = self.caches.topology.list_compute(self.site)
            self._lookups[("compute", "")] = (time.monotonic(), known)
        return list(known)

    def _template_image(self, job: JobRecord) -> str | None:
        """The default image of the job's template (a job without an image of its own),
        read at most every :data:`LOOKUP_TTL` seconds per template."""
        if job.template is None:
            return None
        at, image = self._lookups.get(("template", job.template), (float("-inf"), None))
        if time.monotonic() - at > LOOKUP_TTL:
            image = self.store.get_template(job.template).image
            self._lookups[("template", job.template)] = (time.monotonic(), image)
        return image  # type: ignore[no-any-return]

    def _stop_before_start(self, job: JobRecord, token: int, verdict: str) -> _Outcome | None:
        if verdict == "cancel":
            return ("cancelled", None, "cancelled before it started")
        if verdict == "run":  # the agent is stopping
            self._requeue(job, token, "its agent stopped")
        return None

    def _collect_outputs(
        self, job: JobRecord, token: int, outputs: Path, outcome: _Outcome
    ) -> _Outcome:
        """Collect the attempt's outputs folder into the lake and list it on the job (see
        :mod:`lakecache.compute.outputs`). A job that succeeded but whose outputs could
        not be stored fails, with why: its results would be lost otherwise."""
        from lakecache.compute.outputs import scan_outputs, upload_outputs

        t0 = time.perf_counter()
        scan = scan_outputs(outputs)
        if not scan.files and not scan.left_out:
            return outcome  # it wrote nothing: nothing to store or to say
        self._flush_started(job.id, token)
        try:
            if isinstance(self.store, RemoteJobs):
                secret = self._job_tokens.get((job.id, token))
                manifest, files = self.store.ship_outputs(job.id, token, scan, job_token=secret)
            else:
                hub = self.caches.hub
                manifest, files = upload_outputs(
                    scan, lake=hub.lake, catalog=hub.catalog, settings=hub.settings
                )
                if not self.store.record_outputs(
                    job.id, token, manifest=manifest, files=files, now=self.clock.now()
                ):
                    return outcome  # stale: its end is not reported either
        except LakecacheError as exc:
            self.store.record(job.id, token, "outputs lost", exc.message, now=self.clock.now())
            if outcome[0] == "succeeded":
                return ("failed", outcome[1], f"its outputs could not be stored: {exc.message}")
            return outcome
        detail = (
            f"{len(files)} file(s), {sum(f.size for f in files)} bytes, in "
            f"{time.perf_counter() - t0:.2f} s (manifest {manifest[:12]})"
        )
        if scan.left_out:
            detail += f"; left out: {scan.describe_left_out()}"
        self.store.record(job.id, token, "outputs", detail, now=self.clock.now())
        return outcome

    def _ship_log(self, job_id: int, token: int, shipped: list[int]) -> None:
        """Through a server: send what the attempt's log gained since the last call."""
        if not isinstance(self.store, RemoteJobs):
            return
        path = self.jobs_root / str(job_id) / f"attempt-{token}" / "job.log"
        # The heartbeat thread and the attempt's end both ship: one at a time, or an older
        # read of the file could land last and cut the log short.
        with self._lock:
            ship_lock = self._ship_locks.setdefault((job_id, token), threading.Lock())
        with ship_lock:
            shipped[0] = self.store.ship_log(job_id, token, path, shipped[0])

    def _finish(
        self, job: JobRecord, token: int, state: str, code: int | None, reason: str | None
    ) -> None:
        observers = self._observers.get((job.id, token))
        if observers is not None:  # tracking: last output and points, exit code, end
            observers.on_end(state, code)
        try:
            self._ship_log(job.id, token, self._shipped.setdefault((job.id, token), [0]))
        except LakecacheError as exc:
            log.warning("job %d: the end of its log was not sent: %s", job.id, exc.message)
        finally:
            self._job_tokens.pop((job.id, token), None)
        store, now = self.store, self.clock.now()
        if isinstance(store, ComputeStore):
            pending = self._pending.pop((job.id, token), None)
            before = [(pending[0], "started", pending[1])] if pending else []
            ended = store.finish(
                job.id, token, state=state, exit_code=code, reason=reason, now=now, before=before
            )
        else:
            self._flush_started(job.id, token)
            ended = store.finish(job.id, token, state=state, exit_code=code, reason=reason, now=now)
        if not ended:
            log.warning(
                "job %d attempt %d is stale; its end (%s) is not reported", job.id, token, state
            )

    def _requeue(self, job: JobRecord, token: int, reason: str) -> None:
        self._flush_started(job.id, token)
        self.store.release(job.id, token, reason=reason, now=self.clock.now())

    def _heartbeat(
        self, job_id: int, token: int, stop: threading.Event, state: dict[str, str]
    ) -> None:
        shipped = self._shipped.setdefault((job_id, token), [0])
        while not stop.wait(self.heartbeat_every):
            try:
                state["verdict"] = self.store.heartbeat(job_id, token, now=self.clock.now())
                if state["verdict"] == "run":
                    self._ship_log(job_id, token, shipped)
            except LakecacheError as exc:
                log.warning("job %d heartbeat failed (%s); trying again", job_id, exc.message)
            if state["verdict"] == "lost":
                return

    def _cache_was_ready(self, spec: InputSpec) -> bool | None:
        """Whether a ready cache of the input's whole commit was at this site before the
        job asked (a hit), or not (a miss: filled for it). None when it cannot be told."""
        try:
            ready = self.caches.topology.list_caches(
                site=self.site, dataset=spec.dataset, states=("ready",)
            )
        except LakecacheError:
            return None
        return any(c.commit_id == spec.commit_id and c.subpath == "" for c in ready)


class _Fenced(LakecacheError):
    """This attempt is stale: another attempt of the job owns it now."""

    def __init__(self) -> None:
        super().__init__("this attempt is stale")
