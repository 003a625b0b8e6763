"""Where a run's batches go: the catalog, a server, or a spool folder a runner drains.

One small seam, :class:`Sink`, with one method that stores a batch or raises.
:class:`Unavailable` means "try again later" (a server restarting, a database
that went away): the flusher keeps the batch on disk and retries. Any other
error is the batch's own fault and is reported, not retried forever.

Spool files are JSON lines, one batch a line, written with a single
``write`` of a whole line and an ``fsync``: a reader that finds a last line
without its newline is looking at a write cut short, and skips it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import httpx

from lakecache.errors import CatalogError, LakecacheError
from lakecache.tracking.model import Batch
from lakecache.tracking.store import TrackingStore

log = logging.getLogger("lakecache.tracking")


class Unavailable(LakecacheError):
    """The sink cannot take batches now; they are kept and sent again later."""


class Sink(Protocol):
    def send(self, run_id: int, batch: Batch) -> None:
        """Store ``batch`` durably, or raise :class:`Unavailable` (keep it) or another
        LakecacheError (the batch is refused)."""

    def close(self) -> None: ...


class StoreSink:
    """Straight into the catalog (no server)."""

    def __init__(self, store: TrackingStore) -> None:
        self.store = store

    def send(self, run_id: int, batch: Batch) -> None:
        try:
            self.store.log_batch(run_id, batch)
        except CatalogError as exc:
            raise Unavailable(exc.message) from exc

    def close(self) -> None:
        pass


class HttpSink:
    """Through a server's ``POST /api/v1/tracking/runs/{id}/batch``, on one kept-alive
    connection. Connection failures, timeouts, 502/503/504 and 5xx are
    :class:`Unavailable` (a restarting server); 4xx is the batch's fault."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
            trust_env=False,
        )

    def send(self, run_id: int, batch: Batch) -> None:
        # NaN and infinities as Python writes them (NaN, Infinity): our server reads them.
        body = json.dumps(batch.to_json()).encode()
        try:
            r = self._client.post(
                f"/tracking/runs/{run_id}/batch",
                content=body,
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"the server at {self.url} did not answer: {exc}") from exc
        if r.status_code >= 500:
            raise Unavailable(f"the server at {self.url} answered {r.status_code}")
        if r.status_code >= 400:
            try:
                detail = r.json().get("error", {}).get("message") or r.text
            except ValueError:
                detail = r.text
            raise LakecacheError(f"the server refused a batch of run {run_id}: {detail}")

    def request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """Another call on the same connection (start, end, artifacts); errors raised."""
        from lakecache.client.errors import error_from_response

        try:
            r = self._client.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise Unavailable(f"the server at {self.url} did not answer: {exc}") from exc
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = None
            raise error_from_response(r.status_code, body, self.url)
        return r

    def close(self) -> None:
        self._client.close()


class SpoolSink:
    """Into files of a folder that someone else (the job's runner) drains into the store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def send(self, run_id: int, batch: Batch) -> None:
        try:
            append_spool(self.folder / f"{run_id}-{os.getpid()}.jsonl", run_id, batch)
        except OSError as exc:
            raise Unavailable(f"cannot write the spool in {self.folder}: {exc}") from exc

    def close(self) -> None:
        pass


def append_spool(path: Path, run_id: int, batch: Batch) -> None:
    """Append one batch as one JSON line, flushed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"run": run_id, **batch.to_json()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_spool(path: Path) -> Iterator[tuple[int, Batch]]:
    """The whole batches of a spool file (a last line cut short is skipped)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            log.warning("skipping a cut-short line of %s", path)
            continue
        yield int(obj.pop("run")), Batch.from_json(obj)


def drain_spool(folder: Path, store: TrackingStore, *, run_id: int | None = None) -> int:
    """Store every finished spool file of ``folder`` and remove it; points stored.

    A file is renamed before it is read, so a writer still appending to the
    old name starts a new file and nothing is stored twice or lost.
    """
    if not folder.is_dir():
        return 0
    stored = 0
    for path in sorted(folder.glob("*.jsonl")):
        taken = path.with_suffix(f".draining-{os.getpid()}-{time.monotonic_ns()}")
        try:
            path.rename(taken)
        except FileNotFoundError:
            continue
        for rid, batch in read_spool(taken):
            if run_id is not None and rid != run_id:
                log.warning("spool %s names run %d, not %d: skipped", path, rid, run_id)
                continue
            store.log_batch(rid, batch)
            stored += len(batch)
        taken.unlink()
    return stored
