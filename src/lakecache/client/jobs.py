"""Compute as a lakecache server serves it: capacity, templates, queues, jobs, runners.

:class:`RemoteJobs` answers what :class:`~lakecache.compute.store.ComputeStore`
is asked by the CLI, the SDK (``lakecache.submit``, ``lakecache.Job``) and the
site agent's :class:`~lakecache.compute.runner.JobRunner`, with the same
records and errors, through the REST API (see
:mod:`lakecache.server.routes.jobs`). So ``lakecache job run``, ``job logs -f``
and ``lakecache agent --site S`` work the same logged in as in direct mode,
while the server keeps the one catalog and the scheduler's state.

Times: the server stamps every change with its own clock; the ``now``
arguments of the protocol are ignored here. Fencing: a stale attempt's report
gets 409 ``taken_over`` from the server, which answers here exactly as the
store does for a stale token (False, or ``lost`` for a heartbeat), so the
runner stops. Record ids the API does not expose (templates, queues,
compute) are 0; nothing that uses this protocol reads them.

Sent again: every call a runner makes during an attempt (claim, heartbeat,
timeline entry, log, outputs, finish, release), and its scheduler passes, has
the same effect sent twice as once, so each is sent again when its connection
broke before the answer came (``resend``, see :meth:`ServerConnection.request
<lakecache.client.connection.ServerConnection.request>`): behind a load
balancer the replica it reached may have died mid-request. A timeline entry
carries a key made here for that (the server writes it once); see
:mod:`lakecache.server.routes.jobs` for how each is answered the second time.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from lakecache.client.connection import ServerConnection, path_part
from lakecache.compute.model import (
    DEFAULT_MAX_ATTEMPTS,
    CapacityRecord,
    InputSpec,
    JobEvent,
    JobRecord,
    JobSpec,
    OutputFile,
    QueueRecord,
    Resources,
    TemplateRecord,
)
from lakecache.errors import TakenOverError

if TYPE_CHECKING:
    from lakecache.compute.outputs import OutputScan

#: The most bytes of log sent in one request.
LOG_CHUNK = 1 << 20
#: The most jobs one batch submit sends (the server's limit).
BATCH_MAX = 1000


@dataclass(frozen=True)
class LogChunk:
    """Bytes of a job's log from an offset, the log's size then, and the job's state."""

    data: bytes
    size: int
    state: str

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")


def _size(d: dict[str, Any]) -> Resources:
    return Resources.from_json(d)


def _size_json(size: Resources) -> dict[str, Any]:
    return size.as_json()


def _job_body(spec: JobSpec) -> dict[str, Any]:
    return {
        "queue": spec.queue,
        "command": list(spec.command),
        "inputs": [i.as_dict() for i in spec.inputs],
        "request": _size_json(spec.request),
        "env": dict(spec.env),
        "image": spec.image,
        "max_attempts": spec.max_attempts,
        "timeout_seconds": spec.timeout_seconds,
    }


def job_record(d: dict[str, Any]) -> JobRecord:
    """A :class:`JobRecord` from the API's JSON of a job (the one converter in the model)."""
    return JobRecord.from_dict(d)


def _template(d: dict[str, Any]) -> TemplateRecord:
    return TemplateRecord(
        0, d["name"], d["compute"], 0, d["site"], d["backend"], _size(d["size"]), d["image"]
    )


def _capacity(d: dict[str, Any]) -> CapacityRecord:
    return CapacityRecord(
        compute_id=0,
        compute=d["compute"],
        site=d["site"],
        backend=d["backend"],
        total=_size(d["total"]),
        used=_size(d["used"]),
        admissions=int(d["admissions"]),
        jobs=int(d["jobs"]),
    )


def _queue(d: dict[str, Any]) -> QueueRecord:
    return QueueRecord(
        0,
        d["name"],
        d["policy"],
        d["pending_deadline_seconds"],
        tuple(d["templates"]),
        d.get("job_timeout_seconds"),
        d.get("agent_down") or "wait",
    )


class RemoteJobs:
    """The server's compute, as the logged-in user (or site agent) sees it. Thread-safe."""

    #: True: this store works through a server (the runner ships logs and job tokens).
    remote = True

    def __init__(self, conn: ServerConnection) -> None:
        self._conn = conn
        self._job_tokens: dict[tuple[int, int], str] = {}

    def __repr__(self) -> str:
        return f"RemoteJobs({self._conn.url!r})"

    @property
    def server_url(self) -> str:
        return self._conn.url

    # -- capacity, templates, queues -----------------------------------------------------

    def set_capacity(self, compute: str, total: Resources) -> None:
        """What ``compute`` can run at once (org admins)."""
        self._conn.call("PUT", f"/compute/{path_part(compute)}/capacity", json=_size_json(total))

    def capacity(self, compute_ids: Iterable[int] | None = None) -> list[CapacityRecord]:
        """Each compute resource's capacity and use (ids are not exposed: all of them)."""
        return [_capacity(d) for d in self._conn.call("GET", "/compute/capacity")]

    def remove_compute(self, name: str) -> None:
        self._conn.call("DELETE", f"/compute/{path_part(name)}")

    def add_template(
        self, name: str, compute: str, size: Resources, image: str | None, now: datetime
    ) -> TemplateRecord:
        body = {"name": name, "compute": compute, "size": _size_json(size), "image": image}
        return _template(self._conn.call("POST", "/templates", json=body))

    def list_templates(self) -> list[TemplateRecord]:
        return [_template(d) for d in self._conn.call("GET", "/templates")]

    def get_template(self, name: str) -> TemplateRecord:
        from lakecache.errors import NotFoundError

        for tpl in self.list_templates():
            if tpl.name == name:
                return tpl
        raise NotFoundError(
            f"no template {name!r}", hint="List templates with `lakecache template ls`."
        )

    def remove_template(self, name: str) -> None:
        self._conn.call("DELETE", f"/templates/{path_part(name)}")

    def add_queue(
        self,
        name: str,
        templates: Sequence[str],
        *,
        policy: str = "order",
        pending_deadline: timedelta | None = None,
        job_timeout: timedelta | None = None,
        agent_down: str = "wait",
        now: datetime,
    ) -> QueueRecord:
        body = {
            "name": name,
            "templates": list(templates),
            "policy": policy,
            "pending_deadline_seconds": None
            if pending_deadline is None
            else int(pending_deadline.total_seconds()),
            "job_timeout_seconds": None
            if job_timeout is None
            else int(job_timeout.total_seconds()),
            "agent_down": agent_down,
        }
        return _queue(self._conn.call("POST", "/queues", json=body))

    def list_queues(self) -> list[QueueRecord]:
        return [_queue(d) for d in self._conn.call("GET", "/queues")]

    def get_queue(self, name: str) -> QueueRecord:
        from lakecache.errors import NotFoundError

        for queue in self.list_queues():
            if queue.name == name:
                return queue
        raise NotFoundError(f"no queue {name!r}", hint="List queues with `lakecache queue ls`.")

    # -- jobs ----------------------------------------------------------------------------

    def submit(
        self,
        queue: str,
        command: Sequence[str],
        *,
        request: Resources,
        inputs: Sequence[InputSpec] = (),
        env: dict[str, str] | None = None,
        image: str | None = None,
        submitted_by: str = "",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout_seconds: int | None = None,
        now: datetime | None = None,
    ) -> JobRecord:
        """Submit a job; the server pins each input's ref to a commit (checking that the
        commit resolved here is still the ref's) and places the job if there is room.
        The submitter is the logged-in user, whatever ``submitted_by`` says."""
        spec = JobSpec(
            queue,
            tuple(command),
            request,
            tuple(inputs),
            dict(env or {}),
            image,
            max_attempts,
            timeout_seconds,
        )
        return job_record(self._conn.call("POST", "/jobs", json=_job_body(spec)))

    def submit_many(
        self, specs: Sequence[JobSpec], *, submitted_by: str = "", now: datetime | None = None
    ) -> list[JobRecord]:
        """Submit many jobs in one request (``POST /jobs/batch``): all or none, as
        :meth:`ComputeStore.submit_many <lakecache.compute.store.ComputeStore.submit_many>`;
        the server places those with room at once."""
        out: list[JobRecord] = []
        for start in range(0, len(specs), BATCH_MAX):
            body = {"jobs": [_job_body(s) for s in specs[start : start + BATCH_MAX]]}
            out.extend(job_record(d) for d in self._conn.call("POST", "/jobs/batch", json=body))
        return out

    def admit(self, job_id: int, *, now: datetime) -> JobRecord | None:
        """The server admitted the job at submit already; its record now."""
        job = self.get_job(job_id)
        return job if job.state != "queued" else None

    def get_job(self, job_id: int) -> JobRecord:
        return job_record(self._conn.call("GET", f"/jobs/{job_id}"))

    def timeline(self, job_id: int) -> list[JobEvent]:
        d = self._conn.call("GET", f"/jobs/{job_id}")
        return [
            JobEvent(datetime.fromisoformat(e["at"]), e["kind"], e["detail"], int(e["attempt"]))
            for e in d["timeline"] or []
        ]

    def list_jobs(
        self,
        *,
        states: Sequence[str] | None = None,
        queue: str | None = None,
        site: str | None = None,
        limit: int | None = None,
    ) -> list[JobRecord]:
        params: dict[str, Any] = {}
        if states:
            params["state"] = list(states)
        if queue:
            params["queue"] = queue
        if site:
            params["site"] = site
        out = []
        for d in self._conn.pages("/jobs", **params):
            out.append(job_record(d))
            if limit and len(out) >= limit:
                break
        return out

    def cancel(self, job_id: int, *, now: datetime) -> JobRecord:
        return job_record(self._conn.call("POST", f"/jobs/{job_id}/cancel"))

    def outputs(self, job_id: int) -> list[OutputFile]:
        """The files of the job's collected outputs, by path."""
        return [OutputFile.from_dict(d) for d in self._conn.call("GET", f"/jobs/{job_id}/outputs")]

    def read_output(self, job_id: int, path: str) -> Iterator[bytes]:
        """The bytes of one output file, streamed (the caller verifies them)."""
        r = self._conn.stream("GET", f"/jobs/{job_id}/outputs/{quote(path)}")
        try:
            yield from r.iter_bytes(1 << 20)
        finally:
            r.close()

    def read_log(self, job_id: int, offset: int = 0) -> LogChunk:
        """The latest attempt's log from byte ``offset`` (up to a few MiB), its size and the
        job's state: call again from ``offset + len(data)`` to follow it."""
        r = self._conn.request("GET", f"/jobs/{job_id}/log", params={"offset": offset})
        return LogChunk(r.content, int(r.headers["X-Log-Size"]), r.headers["X-Job-State"])

    # -- the runner's side ---------------------------------------------------------------

    def _pass(self, stale_after: timedelta | None) -> dict[str, Any]:
        body = {"stale_after_seconds": None if stale_after is None else stale_after.total_seconds()}
        # A pass sent twice is two passes, each a compare-and-swap in the catalog.
        out: dict[str, Any] = self._conn.call("POST", "/scheduler/pass", json=body, resend=True)
        return out

    def requeue_stale(self, *, now: datetime, stale_after: timedelta) -> list[tuple[int, str]]:
        """Requeue jobs whose worker went silent (and admit the queued, in the same pass)."""
        return [(int(m["id"]), str(m["state"])) for m in self._pass(stale_after)["moved"]]

    def schedule(self, *, now: datetime, limit: int = 1000, budget: float | None = None) -> int:
        """One scheduler pass on the server (``limit`` and ``budget`` are its own); jobs
        placed."""
        return int(self._pass(None)["placed"])

    def fail_overdue(self, *, now: datetime) -> list[int]:
        """Done by every scheduler pass on the server."""
        self._pass(None)
        return []

    def placed_at(self, site: str, backends: Iterable[str]) -> list[JobRecord]:
        return [
            job_record(d)
            for d in self._conn.call(
                "GET", f"/sites/{path_part(site)}/placed-jobs", params={"backend": list(backends)}
            )
        ]

    def claim(self, job: JobRecord, worker: str, *, now: datetime) -> int | None:
        """Start a placed job; the fencing token, or None if another agent took it. The job
        token the server minted for the attempt is kept for :meth:`job_token`.

        Sent again if its connection broke: the server answers this ``worker``'s repeated
        claim with the token it won, so ``worker`` must be this runner's alone (as
        :class:`~lakecache.compute.runner.JobRunner` makes it)."""
        d = self._conn.call(
            "POST",
            f"/jobs/{job.id}/claim",
            json={"worker": worker, "attempt": job.attempt},
            resend=True,
        )
        token = d["token"]
        if token is None:
            return None
        if d.get("job_token"):
            self._job_tokens[(job.id, int(token))] = d["job_token"]
        return int(token)

    def job_token(self, job_id: int, token: int) -> str | None:
        """The job-scoped token minted for attempt ``token`` (forgotten once read)."""
        return self._job_tokens.pop((job_id, token), None)

    def heartbeat(self, job_id: int, token: int, *, now: datetime) -> str:
        try:
            d = self._conn.call(
                "POST", f"/jobs/{job_id}/heartbeat", json={"token": token}, resend=True
            )
        except TakenOverError:
            return "lost"
        return str(d["verdict"])

    def record(
        self,
        job_id: int,
        token: int,
        kind: str,
        detail: str,
        *,
        now: datetime,
        workdir: str | None = None,
    ) -> bool:
        # The entry's own key: sent again, it is written once.
        body = {
            "token": token,
            "kind": kind,
            "detail": detail,
            "workdir": workdir,
            "key": secrets.token_hex(16),
        }
        try:
            self._conn.call("POST", f"/jobs/{job_id}/events", json=body, resend=True)
        except TakenOverError:
            return False
        return True

    def finish(
        self,
        job_id: int,
        token: int,
        *,
        state: str,
        exit_code: int | None,
        reason: str | None,
        now: datetime,
    ) -> bool:
        body = {"token": token, "state": state, "exit_code": exit_code, "reason": reason}
        try:
            self._conn.call("POST", f"/jobs/{job_id}/finish", json=body, resend=True)
        except TakenOverError:
            return False
        return True

    def release(self, job_id: int, token: int, *, reason: str, now: datetime) -> bool:
        """Give the attempt back; False if stale. Sent again after its first send was
        written, it is False too (the attempt is given back all the same)."""
        try:
            self._conn.call(
                "POST",
                f"/jobs/{job_id}/release",
                json={"token": token, "reason": reason},
                resend=True,
            )
        except TakenOverError:
            return False
        return True

    def runner_seen(self, worker: str, site: str, *, now: datetime) -> None:
        """Nothing to send: the server counts the agent's poll for placed jobs as its sign of
        life (``GET /sites/{site}/placed-jobs``)."""

    def ship_outputs(
        self, job_id: int, token: int, scan: OutputScan, *, job_token: str | None
    ) -> tuple[str, list[OutputFile]]:
        """Send the attempt's collected outputs to the server as one tar stream, with the job's
        own token (which may write this job's outputs and nothing else); the server stores
        them in the lake and lists them on the job. Returns (manifest digest, files).
        Raises TakenOverError when the attempt is stale, and the server's refusal (a
        TooLargeError over its ``max_output_bytes``, InsufficientStorageError) as is."""
        import tempfile

        from lakecache.compute.outputs import write_tar

        conn = self._conn
        if job_token is not None:
            conn = ServerConnection(self._conn.url, job_token)
        try:
            with tempfile.TemporaryFile(prefix="lakecache-outputs-") as spool:
                write_tar(scan, spool)
                size = spool.tell()
                spool.seek(0)
                # The size up front lets the server refuse a tar over its max_output_bytes
                # before any of it is written to its disk. The file itself as the body: it
                # is sent again from its start if the connection breaks (the list replaces).
                d = conn.call(
                    "PUT",
                    f"/jobs/{job_id}/outputs",
                    params={"token": token},
                    content=spool,
                    headers={"Content-Type": "application/x-tar", "Content-Length": str(size)},
                )
        finally:
            if conn is not self._conn:
                conn.close()
        return d["manifest"], [OutputFile.from_dict(f) for f in d["files"]]

    def ship_log(self, job_id: int, token: int, path: Path, offset: int) -> int:
        """Send the bytes of ``path`` after ``offset`` as attempt ``token``'s log; the new
        offset. Raises TakenOverError when the attempt is stale."""
        if not path.exists():
            return offset  # the command has not written yet
        with open(path, "rb") as f:
            f.seek(offset)
            while chunk := f.read(LOG_CHUNK):
                self._conn.call(
                    "PUT",
                    f"/jobs/{job_id}/log",
                    params={"token": token, "offset": offset},
                    content=chunk,
                    headers={"Content-Type": "application/octet-stream"},
                )
                offset += len(chunk)
        return offset
