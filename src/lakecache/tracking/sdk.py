"""The tracking SDK: ``run = lakecache.tracking.start(...)``, then log without waiting.

Logging never blocks the training loop. ``log_metric`` checks its arguments
(a bad name fails at once, in the caller's line), appends one tuple to an
in-memory buffer under an uncontended lock, and returns: a few microseconds.
A background thread (one per run) flushes the buffer in batches every half
second, or sooner when it fills up:

* **to its sink**: the catalog, the server (one kept-alive HTTP connection),
  or, inside a job without a server, a spool folder its runner drains;
* **through outages**: a batch the sink cannot take now (a server restarting,
  a database away) is appended to a spool file on disk and sent again, oldest
  first, with backoff, until it lands; memory stays bounded by the flush
  interval, and a buffer that outgrows ``max_buffer`` points between two
  flushes is written to the spool by the logging call itself (the one rare
  case where logging waits for a disk write);
* **at exit**: ``end()``, leaving a ``with`` block, and an ``atexit`` hook
  flush what is left (retrying for ``flush_timeout`` seconds); whatever still
  cannot be sent stays in the spool, and the next run started on this machine
  sends it.

Delivery is at least once: a batch whose answer was lost in a server restart
is sent again, so a point can be stored twice (same key, step, value and
time); readers see the same series.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from lakecache.errors import LakecacheError, UserError
from lakecache.tracking.model import (
    Batch,
    Columns,
    check_key,
    check_metric_value,
    check_text_value,
)
from lakecache.tracking.sink import (
    HttpSink,
    Sink,
    SpoolSink,
    StoreSink,
    Unavailable,
    append_spool,
    read_spool,
)

log = logging.getLogger("lakecache.tracking")

#: Environment variables a job's runner sets for the job (see lakecache.tracking.jobs).
RUN_ID_ENV = "LAKECACHE_RUN_ID"
SPOOL_ENV = "LAKECACHE_TRACKING_SPOOL"

_live: set[Run] = set()
_live_lock = threading.Lock()
_current: list[Run] = []
_atexit_registered = False


class RunBackend(Protocol):
    """What a run does besides sending batches: artifacts, inputs, its end."""

    sink: Sink

    def log_artifact(self, run_id: int, path: Path, name: str) -> None: ...

    def record_input(self, run_id: int, fields: dict[str, Any]) -> None: ...

    def end(self, run_id: int, status: str) -> None: ...

    def close(self) -> None: ...


class DirectBackend:
    """The catalog and the lake, opened by this process (no server)."""

    def __init__(self, hub: Any) -> None:
        from lakecache.tracking.store import TrackingStore

        self.hub = hub
        self.store = TrackingStore(hub.catalog)
        self.sink: Sink = StoreSink(self.store)

    def log_artifact(self, run_id: int, path: Path, name: str) -> None:
        from lakecache.tracking.objects import log_artifact

        log_artifact(self.store, self.hub.lake, run_id, path, name)

    def record_input(self, run_id: int, fields: dict[str, Any]) -> None:
        self.store.record_input(run_id, **fields)

    def end(self, run_id: int, status: str) -> None:
        self.store.end_run(run_id, status)

    def close(self) -> None:
        pass


class HttpBackend:
    """A lakecache server's tracking API, on one kept-alive connection."""

    def __init__(self, url: str, token: str) -> None:
        self.http = HttpSink(url, token)
        self.sink: Sink = self.http

    def log_artifact(self, run_id: int, path: Path, name: str) -> None:
        from urllib.parse import quote

        from lakecache.tracking.objects import artifact_path

        with path.open("rb") as f:
            self.http.request(
                "PUT",
                f"/tracking/runs/{run_id}/artifacts/{quote(artifact_path(name))}",
                content=f,
                headers={"Content-Type": "application/octet-stream"},
            )

    def record_input(self, run_id: int, fields: dict[str, Any]) -> None:
        self.http.request("POST", f"/tracking/runs/{run_id}/inputs", json=fields)

    def end(self, run_id: int, status: str) -> None:
        self.http.request("POST", f"/tracking/runs/{run_id}/end", json={"status": status})

    def close(self) -> None:
        self.http.close()


class SpoolBackend:
    """Inside a job with no server: files in the attempt's folder, which its runner
    stores (batches, inputs, artifacts) while the job runs and when it ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sink: Sink = SpoolSink(folder)

    def log_artifact(self, run_id: int, path: Path, name: str) -> None:
        from lakecache.tracking.objects import artifact_path

        target = self.folder / "artifacts" / artifact_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)

    def record_input(self, run_id: int, fields: dict[str, Any]) -> None:
        import json

        line = json.dumps(fields, default=str) + "\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "inputs.jsonl").open("a") as f:
            f.write(line)

    def end(self, run_id: int, status: str) -> None:
        pass  # the runner ends a job's run, with the exit code

    def close(self) -> None:
        pass


class Run:
    """A run being logged to. Thread-safe: log from any thread.

    Build one with :func:`start` (or :func:`current` inside a job). Use it as
    a context manager, or call :meth:`end`.
    """

    def __init__(
        self,
        run_id: int,
        backend: RunBackend,
        *,
        owned: bool = True,
        spool: Path | None = None,
        flush_interval: float = 0.5,
        flush_at: int = 20_000,
        max_buffer: int = 200_000,
        flush_timeout: float = 60.0,
    ) -> None:
        """Args:
        run_id: the run's id in the catalog.
        backend: where batches, artifacts and the end go.
        owned: whether :meth:`end` ends the run (False for a job's run: its runner does).
        spool: the folder batches wait in while the sink is unavailable.
        flush_interval: seconds between flushes.
        flush_at: points in the buffer that wake the flusher early.
        max_buffer: points the buffer may hold before logging spills it to disk.
        flush_timeout: how long the final flush retries an unavailable sink.
        """
        self.id = run_id
        self.backend = backend
        self.owned = owned
        self.spool_dir = spool
        self.flush_interval = flush_interval
        self.flush_at = flush_at
        self.max_buffer = max_buffer
        self.flush_timeout = flush_timeout
        #: key -> (steps, times, values) logged since the last flush.
        self._points: dict[str, Columns] = {}
        self._system: dict[str, Columns] = {}
        self._count = 0
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._keys: set[str] = set()
        self._steps: dict[str, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._send_lock = threading.Lock()
        self._ended = False
        self._sampler: Any = None
        self._unsubscribe: Any = None
        #: Batches refused by the sink (a bug, not an outage): counted, logged.
        self.dropped = 0
        #: Points handed to the sink and acknowledged.
        self.sent = 0
        self._retry_after = 0.0
        self._thread = threading.Thread(
            target=self._loop, name=f"lakecache-run-{run_id}", daemon=True
        )
        self._thread.start()
        _register(self)

    def __repr__(self) -> str:
        return f"Run(id={self.id})"

    # -- logging (never waits on the network) ----------------------------------------------

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Log one value of metric ``key``.

        Args:
            key: 1 to 250 characters of UTF-8 (a UserError says what is wrong otherwise).
            value: a number; NaN and infinities are stored as such.
            step: the training step; default one more than this key's last step (from 0).
            timestamp: epoch milliseconds; default now.

        Example: ``run.log_metric("loss", 0.25, step=100)``
        """
        if key not in self._keys:
            self._keys.add(check_key("metric", key))
        if value.__class__ is not float:
            value = check_metric_value(key, value)
        if step is None:
            step = self._steps.get(key, -1) + 1
        self._steps[key] = step
        ts = time.time_ns() // 1_000_000 if timestamp is None else timestamp
        with self._lock:
            cols = self._points.get(key)
            if cols is None:
                cols = self._points[key] = ([], [], [])
            cols[0].append(step)
            cols[1].append(ts)
            cols[2].append(value)
            self._count += 1
            n = self._count
        if n >= self.flush_at:
            self._wake.set()
            if n >= self.max_buffer:
                self._spill()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log several metrics at one step (default: each key's next step)."""
        for key, value in metrics.items():
            self.log_metric(key, value, step)

    def log_param(self, key: str, value: object) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, object]) -> None:
        """Log params (text up to 6000 characters; a key logged again takes the new value)."""
        checked = {
            check_key("param", k): check_text_value("param", str(k), v) for k, v in params.items()
        }
        with self._lock:
            self._params.update(checked)
        self._wake.set()

    def set_tag(self, key: str, value: object) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, object]) -> None:
        """Set tags on the run (text up to 8000 characters)."""
        checked = {check_key("tag", k): check_text_value("tag", str(k), v) for k, v in tags.items()}
        with self._lock:
            self._tags.update(checked)
        self._wake.set()

    def log_system(self, sample: list[tuple[str, float]], step: int | None = None) -> None:
        """Record one system sample (what the sampler calls)."""
        ts = time.time_ns() // 1_000_000
        step = ts // 1000 if step is None else step
        with self._lock:
            for key, value in sample:
                cols = self._system.get(key)
                if cols is None:
                    cols = self._system[key] = ([], [], [])
                cols[0].append(step)
                cols[1].append(ts)
                cols[2].append(float(value))

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        """Upload a file as an artifact of the run (stored once in the lake, by content).

        Waits for the upload. ``name`` defaults to the file's name; a folder uploads
        each file under it. Raises UserError for a missing file or a bad name.
        """
        source = Path(path)
        if source.is_dir():
            for file in sorted(p for p in source.rglob("*") if p.is_file()):
                rel = file.relative_to(source).as_posix()
                self.log_artifact(file, f"{name or source.name}/{rel}")
            return
        if not source.is_file():
            raise UserError(
                f"no file {source} to log as an artifact", hint="Give the path of a file."
            )
        self.backend.log_artifact(self.id, source, name or source.name)

    # -- ending ------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything logged so far; True once stored, False if the sink stayed
        unavailable for ``timeout`` seconds (default ``flush_timeout``; it stays spooled)."""
        deadline = time.monotonic() + (self.flush_timeout if timeout is None else timeout)
        while True:
            self._flush_once(force=True)
            if not self._has_pending():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def end(self, status: str = "finished") -> None:
        """Stop sampling, flush, and record how the run ended (a job's run: flush only)."""
        if self._ended:
            return
        self._ended = True
        if self._sampler is not None:
            self._sampler.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        flushed = self.flush()
        self._stopping.set()
        self._wake.set()
        self._thread.join()
        if not flushed:
            log.warning(
                "run %d: some points could not be sent; they wait in %s and are sent by the "
                "next run started here",
                self.id,
                self.spool_dir,
            )
        if self.owned:
            try:
                self.backend.end(self.id, status)
            except LakecacheError as exc:
                log.warning("run %d: its end was not recorded: %s", self.id, exc.message)
            self.backend.close()
        # A run this process does not own (a job's) leaves its backend open: whoever
        # ends it (the job's runner) may still need it.
        _unregister(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.end("finished")
        elif issubclass(kind, KeyboardInterrupt):
            self.end("killed")
        else:
            self.end("failed")

    # -- the flusher -------------------------------------------------------------------------

    def _has_pending(self) -> bool:
        with self._lock:
            if self._points or self._system or self._params or self._tags:
                return True
        spool = self._spool_file()
        return spool is not None and (spool.exists() or spool.with_suffix(".sending").exists())

    def _spool_file(self) -> Path | None:
        if self.spool_dir is None:
            return None
        return self.spool_dir / f"{self.id}-{os.getpid()}.jsonl"

    def _take(self) -> Batch:
        with self._lock:
            batch = Batch(self._params, self._tags, self._points, self._system)
            self._params, self._tags, self._points, self._system = {}, {}, {}, {}
            self._count = 0
        return batch

    def _spill(self) -> None:
        """The buffer outgrew ``max_buffer``: write it to the spool now (bounded memory)."""
        path = self._spool_file()
        if path is None:
            return  # nowhere to spill: the flusher takes it at its next pass
        with self._send_lock:
            batch = self._take()
            if len(batch):
                append_spool(path, self.id, batch)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._flush_once()
            except Exception:  # noqa: BLE001 - the flusher must outlive any one bad batch
                log.exception("run %d: flush failed", self.id)

    def _flush_once(self, force: bool = False) -> None:
        with self._send_lock:
            if not force and time.monotonic() < self._retry_after:
                return
            batch = self._take()
            spool = self._spool_file()
            try:
                if spool is not None:
                    self._send_spool(spool)
                if len(batch):
                    self._send(batch)
                    batch = Batch()
                self._retry_after = 0.0
            except Unavailable as exc:
                if len(batch) and spool is not None:
                    append_spool(spool, self.id, batch)
                elif len(batch):  # no spool folder: keep it in memory for the next pass
                    self._requeue(batch)
                log.info("run %d: sink unavailable (%s); retrying", self.id, exc.message)
                self._retry_after = time.monotonic() + 1.0

    def _send(self, batch: Batch) -> None:
        try:
            self.backend.sink.send(self.id, batch)
            self.sent += len(batch)
        except Unavailable:
            raise
        except LakecacheError as exc:
            self.dropped += len(batch)
            log.error("run %d: a batch of %d items was refused: %s", self.id, len(batch), exc)

    def _send_spool(self, spool: Path) -> None:
        """Send what waits on disk, oldest first: the file an earlier pass was cut off in
        (``.sending``), then what was spooled since."""
        taken = spool.with_suffix(".sending")
        if not taken.exists():
            if not spool.exists():
                return
            spool.rename(taken)
        batches = list(read_spool(taken))
        for i, (_, batch) in enumerate(batches):
            try:
                self._send(batch)
            except Unavailable:
                # Keep what is unsent, in order, ahead of anything newer.
                rest = taken.with_suffix(".rest")
                for _, later in batches[i:]:
                    append_spool(rest, self.id, later)
                rest.replace(taken)
                raise
        taken.unlink()
        if spool.exists():
            self._send_spool(spool)

    def _requeue(self, batch: Batch) -> None:
        with self._lock:
            for mine, theirs in ((self._points, batch.metrics), (self._system, batch.system)):
                for key, (steps, times, vals) in theirs.items():
                    cols = mine.get(key)
                    if cols is None:
                        mine[key] = (steps, times, vals)
                    else:
                        mine[key] = (steps + cols[0], times + cols[1], vals + cols[2])
            self._count += batch.points()
            self._params = {**batch.params, **self._params}
            self._tags = {**batch.tags, **self._tags}


# -- starting runs ---------------------------------------------------------------------------


def _register(run: Run) -> None:
    global _atexit_registered
    with _live_lock:
        _live.add(run)
        if not _atexit_registered:
            atexit.register(_end_all)
            _atexit_registered = True


def _unregister(run: Run) -> None:
    with _live_lock:
        _live.discard(run)
        if run in _current:
            _current.remove(run)


def _end_all() -> None:
    with _live_lock:
        runs = list(_live)
    for run in runs:
        run.end("finished")


def current() -> Run | None:
    """The run this process logs to: the one started last, or its job's run (a job's
    runner sets ``LAKECACHE_RUN_ID``); None outside both."""
    with _live_lock:
        if _current:
            return _current[-1]
    if os.environ.get(RUN_ID_ENV):
        return start()
    return None


def start(
    experiment: str | None = None,
    name: str | None = None,
    *,
    params: Mapping[str, object] | None = None,
    tags: Mapping[str, object] | None = None,
    system_metrics: bool | None = None,
    settings: Any = None,
    hub: Any = None,
) -> Run:
    """Start a run, or join the current job's run, and return it.

    Inside a job (its runner sets ``LAKECACHE_RUN_ID``) the job's run is
    joined: ``experiment`` and ``name`` are ignored (the job's runner named them),
    and the runner records system metrics and ends the run. Elsewhere a run
    starts in ``experiment`` (default ``Default``, shared), through the
    configured server when there is one (``lakecache login``), else straight
    into the catalog; it records the command line, the environment's versions,
    the code version (git) and, with ``system_metrics`` (default on), CPU,
    memory, disk, network and GPU every second.

    Args:
        experiment: the experiment's name (made if missing).
        name: the run's name (default ``run-<id>``).
        params, tags: logged at once.
        system_metrics: sample the machine every second (default: on outside jobs).
        settings, hub: lakecache settings or an opened hub (default: from the environment).

    Example::

        with lakecache.tracking.start("resnet", params={"lr": 0.1}) as run:
            for step in range(100):
                run.log_metric("loss", 1 / (step + 1), step=step)
    """
    from lakecache.settings import Settings
    from lakecache.tracking.env import code_version, environment

    job_run = os.environ.get(RUN_ID_ENV)
    if settings is None and hub is None:
        settings = Settings.load()
    if hub is not None:
        settings = hub.settings
    spool = settings.home / "tracking-spool"
    if job_run:
        run_id = _run_id(job_run)
        backend = _job_backend(settings, hub)
        run = Run(run_id, backend, owned=False, spool=_job_spool(settings))
        system_metrics = bool(system_metrics)
    else:
        backend, run_id = _new_run(
            settings,
            hub,
            experiment=experiment,
            name=name,
            command=list(sys.argv),
            env=environment(),
            code=code_version(),
        )
        run = Run(run_id, backend, owned=True, spool=spool)
        system_metrics = True if system_metrics is None else system_metrics
        _resend_leftovers(spool, backend.sink)
    if params:
        run.log_params(params)
    if tags:
        run.set_tags(tags)
    if system_metrics:
        from lakecache.tracking.sampler import SystemSampler

        run._sampler = SystemSampler(run.log_system).start()
    run._unsubscribe = _follow_reads(run)
    with _live_lock:
        _current.append(run)
    return run


def _run_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(
            f"{RUN_ID_ENV}={text!r} is not a run id",
            hint=f"Unset {RUN_ID_ENV}: it is set by a job's runner, to the job's run.",
        ) from None


def _job_spool(settings: Any) -> Path:
    folder = os.environ.get(SPOOL_ENV)
    return Path(folder) / "retry" if folder else settings.home / "tracking-spool"


def _job_backend(settings: Any, hub: Any) -> RunBackend:
    from lakecache.client.login import find_server

    # The runner names a spool folder only when it works without a server: then it is
    # the way, whatever server a login saved in the home folder may name.
    folder = os.environ.get(SPOOL_ENV)
    if folder:
        return SpoolBackend(Path(folder))
    found = find_server(settings)
    if found is not None:
        return HttpBackend(*found)
    from lakecache.data.hub import Hub

    return DirectBackend(hub or Hub(settings, remote=False))


def _new_run(
    settings: Any,
    hub: Any,
    *,
    experiment: str | None,
    name: str | None,
    command: list[str],
    env: dict[str, Any],
    code: dict[str, Any],
) -> tuple[RunBackend, int]:
    from lakecache.client.login import find_server
    from lakecache.tracking.store import DEFAULT_EXPERIMENT

    experiment = experiment or DEFAULT_EXPERIMENT
    found = None if (hub is not None and hub.server is None) else find_server(settings)
    if found is not None:
        http = HttpBackend(*found)
        r = http.http.request(
            "POST",
            "/tracking/runs",
            json={
                "experiment": experiment,
                "name": name,
                "command": command,
                "env": env,
                "code": code,
            },
        )
        return http, int(r.json()["id"])
    from lakecache.data.hub import Hub

    direct = DirectBackend(hub or Hub(settings, remote=False))
    record = direct.store.create_run(
        experiment,
        user=settings.author,
        name=name,
        command=command,
        env=env,
        code=code,
        experiment_owner=settings.author if experiment != DEFAULT_EXPERIMENT else "",
    )
    return direct, record.id


def _resend_leftovers(folder: Path, sink: Sink) -> None:
    """Send what runs of processes that have exited left in the spool (best effort)."""
    if not folder.is_dir():
        return
    for path in folder.glob("*-*.jsonl"):
        try:
            pid = int(path.stem.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        taken = path.with_suffix(f".resend-{os.getpid()}")
        try:
            path.rename(taken)
        except FileNotFoundError:
            continue
        try:
            for run_id, batch in read_spool(taken):
                sink.send(run_id, batch)
        except LakecacheError as exc:
            log.info("leftover spool %s not sent yet: %s", path, exc.message)
            taken.rename(path)
            continue
        taken.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _follow_reads(run: Run) -> Any:
    """Record the dataset commits this process reads while the run is live."""
    from lakecache.integrations.reads import ReadRecord, subscribe

    def on_read(record: ReadRecord) -> None:
        fields = {
            "dataset": record.dataset,
            "commit_id": record.commit_id,
            "source": record.source,
            "hit": True if record.source == "cache" else None,
            "files": record.files,
            "nbytes": record.bytes,
            "reader": record.reader,
        }
        try:
            run.backend.record_input(run.id, fields)
        except LakecacheError as exc:
            log.warning("run %d: the read of %s was not recorded: %s", run.id, record, exc)

    return subscribe(on_read)
