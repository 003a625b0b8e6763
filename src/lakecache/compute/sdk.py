"""``lakecache.submit`` and ``lakecache.Job``: run a command on a queue from Python."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakecache.compute.model import (
    DEFAULT_MAX_ATTEMPTS,
    InputSpec,
    JobEvent,
    JobRecord,
    JobSpec,
    OutputFile,
    Resources,
    parse_cpu,
    parse_input,
    parse_timeout,
)
from lakecache.compute.store import ComputeStore
from lakecache.errors import LakecacheError, UserError

log = logging.getLogger("lakecache.jobs")

if TYPE_CHECKING:
    from lakecache.catalog import Catalog
    from lakecache.client.jobs import RemoteJobs

    #: Where jobs are: the catalog, or a server.
    JobStore = ComputeStore | RemoteJobs
    from lakecache.data.hub import Hub
    from lakecache.settings import Settings


def resolve_inputs(catalog: Catalog, specs: Sequence[str]) -> list[InputSpec]:
    """Parse ``[name=]dataset@ref[:cached|:stream]`` and pin each ref to its commit now.

    Raises:
        UserError: a malformed spec.
        DatasetNotFoundError, NotFoundError: an unknown dataset or ref (with a hint).
    """
    out = []
    for text in specs:
        name, dataset, ref, mode = parse_input(text)
        out.append(InputSpec(name, dataset, ref, catalog.resolve(dataset, ref), mode))
    return out


def jobs_store(hub: Hub) -> JobStore:
    """Compute as ``hub`` reaches it: the catalog's :class:`ComputeStore`, or, logged in
    to a server, :class:`~lakecache.client.jobs.RemoteJobs` (the same protocol)."""
    server = hub.server
    if server is not None:
        from lakecache.client.jobs import RemoteJobs

        return RemoteJobs(server)
    return ComputeStore(hub.catalog)


_store = jobs_store


def log_chunks(store: JobStore, job_id: int, *, follow: bool, poll: float = 0.2) -> Iterator[bytes]:
    """The job's log (of its latest attempt) as it comes; with ``follow``, until it ends.

    Through a server the log is read from it by offset (the agent ships it as the
    job writes); directly, from the attempt's file on this machine.

    Raises:
        UserError: directly, the job ran on a machine whose files are not here.
    """
    from lakecache.client.jobs import RemoteJobs

    if isinstance(store, RemoteJobs):
        offset = 0
        while True:
            chunk = store.read_log(job_id, offset)
            if chunk.data:
                offset += len(chunk.data)
                yield chunk.data
                continue
            if not follow or (chunk.done and offset >= chunk.size):
                return
            time.sleep(poll)
    job = store.get_job(job_id)
    while follow and job.workdir is None and not job.done:
        time.sleep(poll)
        job = store.get_job(job_id)
    path = log_path(job)
    with open(path, "rb") as f:
        while True:
            data = f.read(65536)
            if data:
                yield data
                continue
            if not follow:
                return
            job = store.get_job(job_id)
            if job.done:
                rest = f.read()
                if rest:
                    yield rest
                return
            if job.workdir is not None and (job.workdir + "/job.log") != str(path):
                return  # a new attempt began elsewhere: its log is another file
            time.sleep(poll)


class Job:
    """A job submitted to a queue: its state, timeline and log; wait for it or cancel it.

    Get one from :func:`submit`, or ``Job(id)`` for an existing job. Each
    property reads the catalog afresh. Close it (or use ``with``) to release
    the catalog connection it opened, if it opened one.

    Example:
        >>> job = lakecache.submit(["python", "train.py"], queue="gpu", inputs=["xray@v1"])
        >>> job.wait().state
        'succeeded'
    """

    def __init__(
        self,
        job_id: int,
        *,
        settings: Settings | None = None,
        hub: Hub | None = None,
        _record: JobRecord | None = None,
    ):
        """Args:
            job_id: the job's number (``lakecache job ls``).
            settings: where the catalog is (default ``Settings.load()``).
            hub: an open hub to use instead (not closed by :meth:`close`).

        Raises:
            NotFoundError: no job with this id.
        """
        from lakecache.data.hub import Hub as _Hub

        self._own = hub is None
        #: Jobs of one submit_many that opened their hub: the last one closed closes it.
        self._shared: list[int] | None = None
        if hub is None:
            if settings is None:
                from lakecache.settings import Settings as _Settings

                settings = _Settings.load()
            hub = _Hub(settings)
        self._hub = hub
        self.id = job_id
        try:
            self._store = _store(hub)
            if _record is None:  # submit knows it exists
                self._store.get_job(job_id)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"Job({self.id})"

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the catalog connection this object opened (none if given a hub)."""
        if self._own:
            self._own = False
            self._hub.close()
        elif self._shared is not None:
            shared, self._shared = self._shared, None
            shared[0] -= 1
            if shared[0] == 0:
                self._hub.close()

    @property
    def record(self) -> JobRecord:
        """Everything the catalog knows of the job now."""
        return self._store.get_job(self.id)

    @property
    def state(self) -> str:
        """queued, placed, running, succeeded, failed or cancelled."""
        return self.record.state

    @property
    def timeline(self) -> list[JobEvent]:
        """What happened to the job, in order: queued, placed (where, why), data ready, ..."""
        return self._store.timeline(self.id)

    def wait(self, timeout: float | None = None, *, poll: float = 0.2) -> JobRecord:
        """Block until the job has ended; returns its final record.

        Raises:
            TimeoutError: still not ended after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (rec := self.record).done:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} is still {rec.state} after {timeout} s")
            time.sleep(poll)
        return rec

    def logs(self) -> str:
        """The job's stdout and stderr so far (of its latest attempt).

        Raises:
            UserError: it has not started, or ran on a machine whose files are not here.
        """
        data = b"".join(log_chunks(self._store, self.id, follow=False))
        return data.decode(errors="replace")

    def outputs(self) -> list[OutputFile]:
        """The files its outputs folder held when its attempt ended, by path, each stored in
        the lake (empty until then, or if it wrote none).

        Example:
            >>> job.wait().state
            'succeeded'
            >>> [f.path for f in job.outputs()]
            ['metrics.json', 'model/weights.pt']
        """
        return self._store.outputs(self.id)

    def download_outputs(self, dest: str | Path) -> list[OutputFile]:
        """Download its collected outputs into the folder ``dest`` (made if missing), each
        file checked against its digest; returns the files written.

        Raises:
            InvalidPathError: a symlink in ``dest`` would take a file outside it.
            IntegrityError: bytes read do not match an output's digest.
        """
        return download_outputs(self._store, self._hub, self.id, Path(dest))

    def cancel(self) -> JobRecord:
        """Cancel it: at once if not started, else its agent stops it within a heartbeat.

        Raises:
            ConflictError: the job has already ended.
        """
        return self._store.cancel(self.id, now=datetime.now(UTC))


def download_outputs(store: JobStore, hub: Hub, job_id: int, dest: Path) -> list[OutputFile]:
    """Write job ``job_id``'s collected outputs under ``dest``, verified; the files written.

    Through a server each file is streamed from it (it reads the lake); directly,
    they are read from the lake as a pull reads a commit's files.
    """
    from lakecache.client.jobs import RemoteJobs
    from lakecache.compute.outputs import safe_target, write_verified

    files = store.outputs(job_id)
    dest.mkdir(parents=True, exist_ok=True)
    if isinstance(store, RemoteJobs):
        for f in files:
            write_verified(safe_target(dest, f.path), store.read_output(job_id, f.path), f)
        return files
    from lakecache.data.materialize import materialize
    from lakecache.lake.objects import ManifestEntry

    for f in files:
        safe_target(dest, f.path)  # the same checks as through a server, before any write
    entries = [ManifestEntry(f.path, f.digest, f.size, f.mode) for f in files]
    materialize(
        entries,
        dest,
        lake=hub.lake,
        catalog=hub.catalog,
        workers=hub.settings.workers,
        skip_existing=False,
    )
    return files


def log_path(job: JobRecord) -> Path:
    """The log file of the job's latest attempt, if this machine can read it."""
    if job.workdir is None:
        raise UserError(
            f"job {job.id} has not started yet ({job.state}), so it has no log",
            hint=f"Wait for it: `lakecache job show {job.id}` shows where it stands.",
        )
    path = Path(job.workdir) / "job.log"
    if not path.exists():
        raise UserError(
            f"job {job.id}'s log is not on this machine ({path})",
            hint="Read it on the machine of the agent that ran it.",
        )
    return path


def submit(
    command: Sequence[str],
    *,
    queue: str,
    inputs: Sequence[str] = (),
    cpu: float | str = 1,
    memory: int = 0,
    gpu: int = 0,
    resources: Mapping[str, int] | None = None,
    env: Mapping[str, str] | None = None,
    image: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    timeout: float | None = None,
    settings: Settings | None = None,
    hub: Hub | None = None,
) -> Job:
    """Submit ``command`` to ``queue``; it runs where the queue finds room first.

    Args:
        command: the program and its arguments, e.g. ``["python", "train.py"]``.
        queue: the queue's name (``lakecache queue ls``).
        inputs: dataset commits to read, ``"xray@v1"`` (cached at the chosen site,
            the default), ``"xray@v1:stream"`` (pulled for the job alone), or
            ``"train=xray@v1"`` to name the variable ``LAKECACHE_INPUT_TRAIN``.
        cpu: cores, e.g. ``2``, ``0.5`` or ``"500m"``.
        memory: bytes.
        gpu: GPUs.
        resources: named resources, e.g. ``{"ssd": 1}``.
        env: extra environment variables for the job.
        image: container image, for container backends.
        max_attempts: runs allowed when agents die under it (first run included).
        timeout: seconds each run may take; past it the job is stopped on its
            backend and fails, "timed out after N s" (default: the queue's limit).
        settings: where the catalog is (default ``Settings.load()``).
        hub: an open hub to use instead.

    Returns:
        The :class:`Job`, already placed if a template had room. Logged in to a
        server (``lakecache login``), the job is submitted there, as that user.

    Raises:
        NotFoundError: unknown queue, dataset or ref (the hint says how to list them).
        UserError: the job is larger than every template of the queue, or bad input.
    """
    spec = dict(
        queue=queue,
        inputs=inputs,
        cpu=cpu,
        memory=memory,
        gpu=gpu,
        resources=resources,
        env=env,
        image=image,
        max_attempts=max_attempts,
        timeout=timeout,
    )
    return _submit_all([(list(command), spec)], settings=settings, hub=hub, batch=False)[0]


def submit_many(
    jobs: Sequence[Mapping[str, Any]],
    *,
    settings: Settings | None = None,
    hub: Hub | None = None,
) -> list[Job]:
    """Submit many jobs at once: one transaction (or one request to a server), and one
    scheduling pass that places every job with room. Much faster than :func:`submit`
    in a loop for a sweep or a fan-out.

    Args:
        jobs: one mapping per job, with ``command`` and :func:`submit`'s keyword
            arguments (``queue`` required), e.g.
            ``{"command": ["python", "train.py", "--lr", "0.1"], "queue": "gpu"}``.
        settings, hub: as for :func:`submit`.

    Returns:
        The :class:`Job` of each, in the order given. Closing them all closes the
        catalog connection opened here (none if given a hub).

    Raises:
        BatchRefusedError: a job was refused (its message starts with which, ``index``
            is its position); no job of the batch was submitted.
        UserError: a mapping without ``command`` or ``queue``, or with an unknown key.
    """
    allowed = set(_SUBMIT_KEYS)
    batch = []
    for index, job in enumerate(jobs):
        where = f"job {index + 1} of {len(jobs)}"
        unknown = sorted(set(job) - allowed - {"command"})
        if unknown:
            raise UserError(
                f"{where}: unknown key(s) {', '.join(unknown)}",
                hint=f"Each job takes command and {', '.join(_SUBMIT_KEYS)}.",
            )
        if "command" not in job or "queue" not in job:
            raise UserError(
                f"{where}: a job needs a command and a queue",
                hint='Give each as {"command": ["true"], "queue": "Q", ...}.',
            )
        batch.append((list(job["command"]), {k: v for k, v in job.items() if k != "command"}))
    return _submit_all(batch, settings=settings, hub=hub, batch=True)


#: The keyword arguments of :func:`submit` that a job of :func:`submit_many` may give.
_SUBMIT_KEYS = (
    "queue",
    "inputs",
    "cpu",
    "memory",
    "gpu",
    "resources",
    "env",
    "image",
    "max_attempts",
    "timeout",
)


def _submit_all(
    jobs: Sequence[tuple[list[str], Mapping[str, Any]]],
    *,
    settings: Settings | None,
    hub: Hub | None,
    batch: bool,
) -> list[Job]:
    from lakecache.data.hub import Hub as _Hub

    own = hub is None
    if hub is None:
        if settings is None:
            from lakecache.settings import Settings as _Settings

            settings = _Settings.load()
        hub = _Hub(settings)
    try:
        store = _store(hub)
        specs = [
            JobSpec(
                str(kw["queue"]),
                tuple(command),
                Resources(
                    parse_cpu(kw.get("cpu", 1)),
                    int(kw.get("memory", 0)),
                    int(kw.get("gpu", 0)),
                    dict(kw.get("resources") or {}),
                ),
                tuple(resolve_inputs(hub.catalog, kw.get("inputs", ()))),
                dict(kw.get("env") or {}),
                kw.get("image"),
                int(kw.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
                parse_timeout(kw.get("timeout")),
            )
            for command, kw in jobs
        ]
        now = datetime.now(UTC)
        if batch:
            records = store.submit_many(specs, submitted_by=hub.author, now=now)
        else:  # one job: POST /jobs through a server
            (spec,) = specs
            one = store.submit(
                spec.queue,
                spec.command,
                request=spec.request,
                inputs=spec.inputs,
                env=dict(spec.env),
                image=spec.image,
                submitted_by=hub.author,
                max_attempts=spec.max_attempts,
                timeout_seconds=spec.timeout_seconds,
                now=now,
            )
            records = [one]
        if isinstance(store, ComputeStore):  # a server places them as it queues them
            try:
                # Placed now where there is room; else a runner's scheduling pass does it.
                store.admit_many([r.id for r in records], now=now)
            except LakecacheError as exc:
                log.warning("%d job(s) queued, not placed yet: %s", len(records), exc.message)
        handles = [Job(r.id, hub=hub, _record=r) for r in records]
        if own and handles:
            if batch:
                shared = [len(handles)]
                for h in handles:
                    h._shared = shared
            else:
                handles[0]._own = True  # a hub opened here is the job's to close
        elif own:
            hub.close()
        return handles
    except BaseException:
        if own:
            hub.close()
        raise
