"""Attempts: claims, heartbeats, timeline entries, ends, requeues and cancels, each fenced
by the attempt's token (the last layer of :class:`~lakecache.compute.store.ComputeStore`;
see its notes on concurrency).

Sent again. Through a server, a runner's report whose connection broke (the
replica it reached died mid-request) is sent again, perhaps to another
replica, without knowing whether the first one was written. Each report is
safe to repeat: a heartbeat or an outputs list writes the same thing twice; a
timeline entry carries the runner's ``key`` and is written once; and
:meth:`Attempts.attempt` tells the server how an attempt ended, so that a
repeated end (or claim) is answered as the first one was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from lakecache.catalog import topology_tables as tt
from lakecache.compute import tables as ct
from lakecache.compute.admission import Admission
from lakecache.compute.doorbell import ring
from lakecache.compute.model import JobRecord, OutputFile
from lakecache.compute.together import together
from lakecache.errors import ConflictError


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of a job: who claimed it and how it ended (``outcome`` None: not yet;
    else ``succeeded``, ``failed``, ``cancelled``, ``released`` or ``lost``)."""

    job_id: int
    number: int
    worker: str
    outcome: str | None
    exit_code: int | None


# The statements of every job's claim and end, built once (parameters ``b_*``).
_j, _a = ct.compute_jobs, ct.compute_job_attempts
_CLAIM = (
    update(_j)
    .where(_j.c.id == bindparam("b_id"), _j.c.state == "placed", _j.c.attempt == bindparam("b_was"))
    .values(
        state="running",
        attempt=bindparam("b_token", type_=_j.c.attempt.type),
        worker=bindparam("b_worker", type_=_j.c.worker.type),
        heartbeat_at=bindparam("b_now", type_=_j.c.heartbeat_at.type),
        updated_at=bindparam("b_now", type_=_j.c.updated_at.type),
        workdir=bindparam("b_workdir", type_=_j.c.workdir.type),
    )
)
_ATTEMPT_INSERT = _a.insert().values(
    job_id=bindparam("b_id", type_=_a.c.job_id.type),
    number=bindparam("b_token", type_=_a.c.number.type),
    worker=bindparam("b_worker", type_=_a.c.worker.type),
    compute_id=select(_j.c.compute_id).where(_j.c.id == bindparam("b_id")).scalar_subquery(),
    started_at=bindparam("b_now", type_=_a.c.started_at.type),
)
_END_JOB = (
    update(_j)
    .where(
        _j.c.id == bindparam("b_id"), _j.c.state == "running", _j.c.attempt == bindparam("b_token")
    )
    .values(
        state=bindparam("b_state", type_=_j.c.state.type),
        exit_code=bindparam("b_code", type_=_j.c.exit_code.type),
        reason=bindparam("b_reason", type_=_j.c.reason.type),
        updated_at=bindparam("b_now", type_=_j.c.updated_at.type),
        worker=None,
    )
)
_END_ATTEMPT = (
    update(_a)
    .where(_a.c.job_id == bindparam("b_id"), _a.c.number == bindparam("b_token"))
    .values(
        ended_at=bindparam("b_now", type_=_a.c.ended_at.type),
        exit_code=bindparam("b_code", type_=_a.c.exit_code.type),
        outcome=bindparam("b_state", type_=_a.c.outcome.type),
    )
)

#: backends -> the statement of :meth:`Attempts.placed_at` (its site a parameter).
_placed_queries: dict[tuple[str, ...], Any] = {}


class Attempts(Admission):
    """Running jobs: every report carries the attempt's fencing token. Thread-safe."""

    # -- running: claims, heartbeats and reports, all fenced ------------------------------

    def placed_at(self, site: str, backends: Iterable[str]) -> list[JobRecord]:
        """Placed jobs waiting to start on ``site``'s compute of one of ``backends``."""
        # Every pass of every runner asks, most of the time for nothing: the statement is
        # built once per set of backends (SQLAlchemy then keeps its compiled form at hand,
        # where a new one costs its cache key and lookup at every call).
        key = tuple(sorted(backends))
        q = _placed_queries.get(key)
        if q is None:
            j = ct.compute_jobs
            q = _placed_queries[key] = (
                self._job_query()
                .where(
                    j.c.state == "placed",
                    tt.sites.c.name == bindparam("site"),
                    tt.compute_resources.c.backend.in_(list(key)),
                )
                .order_by(j.c.id)
            )
        with self._c._read() as conn:
            return [self._job(r) for r in conn.execute(q, {"site": site}).mappings()]

    def claim(
        self, job: JobRecord, worker: str, *, now: datetime, workdir: str | None = None
    ) -> int | None:
        """Start a placed job: ``placed -> running`` with a new attempt number, which is the
        fencing token the worker passes to every later call. None if another worker took it.
        ``workdir``: the attempt's folder, set (and its ``preparing`` entry added to the
        timeline) in the same transaction."""
        workdirs = None if workdir is None else {job.id: workdir}
        return self.claim_many([job], worker, now=now, workdirs=workdirs).get(job.id)

    def claim_many(
        self,
        jobs: Sequence[JobRecord],
        worker: str,
        *,
        now: datetime,
        workdirs: Mapping[int, str] | None = None,
    ) -> dict[int, int]:
        """:meth:`claim` each of ``jobs`` in one transaction; job id -> its token, for
        those this worker took (the others another worker took first)."""
        tokens: dict[int, int] = {}
        events: list[tuple[int, str, str, int]] = []
        with self._c._write() as conn:
            for job in jobs:
                token = job.attempt + 1
                workdir = (workdirs or {}).get(job.id)
                res = conn.execute(
                    _CLAIM,
                    {
                        "b_id": job.id,
                        "b_was": job.attempt,
                        "b_token": token,
                        "b_worker": worker,
                        "b_now": now,
                        "b_workdir": workdir,
                    },
                )
                if res.rowcount != 1:
                    continue
                conn.execute(
                    _ATTEMPT_INSERT,
                    {"b_id": job.id, "b_token": token, "b_worker": worker, "b_now": now},
                )
                events.append((job.id, "claimed", f"by {worker}", token))
                if workdir is not None:
                    events.append((job.id, "preparing", f"in {workdir}", token))
                tokens[job.id] = token
            if events:  # the claims' timeline entries, in one statement
                conn.execute(
                    ct.compute_job_events.insert(),
                    [
                        {"job_id": i, "at": now, "kind": k, "detail": d, "attempt": n}
                        for i, k, d, n in events
                    ],
                )
        return tokens

    def attempt(self, job_id: int, number: int) -> AttemptRecord | None:
        """Attempt ``number`` of the job as the catalog has it; None if it never started."""
        a = ct.compute_job_attempts
        with self._c._read() as conn:
            row = conn.execute(
                select(a.c.worker, a.c.outcome, a.c.exit_code).where(
                    a.c.job_id == job_id, a.c.number == number
                )
            ).one_or_none()
        if row is None:
            return None
        code = None if row.exit_code is None else int(row.exit_code)
        return AttemptRecord(job_id, number, str(row.worker), row.outcome, code)

    def _fenced(self, conn: Connection, job_id: int, token: int) -> bool:
        """True if ``token`` is still the running attempt (the row is locked on PostgreSQL)."""
        j = ct.compute_jobs
        row = conn.execute(
            select(j.c.state, j.c.attempt).where(j.c.id == job_id).with_for_update()
        ).one_or_none()
        return row is not None and row.state == "running" and int(row.attempt) == token

    def heartbeat(self, job_id: int, token: int, *, now: datetime) -> str:
        """The worker of attempt ``token`` is alive. Returns ``run`` (carry on), ``cancel``
        (stop the job: someone cancelled it) or ``lost`` (the attempt is stale: stop, report
        nothing)."""
        j = ct.compute_jobs
        with self._c._write() as conn:
            res = conn.execute(
                update(j)
                .where(j.c.id == job_id, j.c.state == "running", j.c.attempt == token)
                .values(heartbeat_at=now)
            )
            if res.rowcount != 1:
                return "lost"
            cancel = conn.scalar(select(j.c.cancel_requested).where(j.c.id == job_id))
        return "cancel" if cancel else "run"

    def record(
        self,
        job_id: int,
        token: int,
        kind: str,
        detail: str,
        *,
        now: datetime,
        workdir: str | None = None,
        key: str | None = None,
    ) -> bool:
        """Add to the timeline of attempt ``token`` (and set its folder); False if stale.

        ``key``: the caller's own name for this entry (unique per job, e.g. random hex).
        An entry with that key already on the job is not written again (True: it is
        there), so a report sent again after its connection broke is written once. The
        job's row lock (PostgreSQL; SQLite writes one at a time) orders two such sends.
        """
        e = ct.compute_job_events
        with self._c._write() as conn:
            if not self._fenced(conn, job_id, token):
                return False
            if key is not None and conn.scalar(
                select(e.c.id).where(e.c.job_id == job_id, e.c.key == key)
            ):
                return True  # written by the first send
            if workdir is not None:
                conn.execute(
                    update(ct.compute_jobs)
                    .where(ct.compute_jobs.c.id == job_id)
                    .values(workdir=workdir)
                )
            conn.execute(
                e.insert().values(
                    job_id=job_id, at=now, kind=kind, detail=detail, attempt=token, key=key
                )
            )
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
        before: Sequence[tuple[datetime, str, str]] = (),
    ) -> bool:
        """``running -> succeeded | failed | cancelled`` for attempt ``token``; frees the slot.
        ``before``: timeline entries (when, kind, detail) to add first, in the same
        transaction (a short job's "started").

        Returns False, changing nothing, when the token is stale.
        """
        if state not in ("succeeded", "failed", "cancelled"):
            raise ValueError(f"not a final job state: {state!r}")

        def end(conn: Connection) -> bool:
            values = {
                "b_id": job_id,
                "b_token": token,
                "b_state": state,
                "b_code": exit_code,
                "b_reason": reason,
                "b_now": now,
            }
            if conn.execute(_END_JOB, values).rowcount != 1:
                return False
            conn.execute(_END_ATTEMPT, values)
            for at, kind, text in before:
                self._event(conn, job_id, at, kind, text, token)
            code = "" if exit_code is None else f"exit code {exit_code}"
            detail = ", ".join(x for x in (code, reason or "") if x)
            self._event(conn, job_id, now, state, detail or state, token)
            return True

        # Ends that arrive together (a burst of short jobs) share one transaction.
        if not together.write(self._c, end):
            return False
        ring(self._c)
        return True

    def record_outputs(
        self,
        job_id: int,
        token: int,
        *,
        manifest: str,
        files: Sequence[OutputFile],
        now: datetime,
    ) -> bool:
        """List the outputs attempt ``token`` left (their blobs already in the lake, their
        manifest at ``manifest``), replacing any listed before. False if stale."""
        o, j = ct.compute_job_outputs, ct.compute_jobs
        total = sum(f.size for f in files)
        with self._c._write() as conn:
            if not self._fenced(conn, job_id, token):
                return False
            conn.execute(o.delete().where(o.c.job_id == job_id))
            rows = [{"job_id": job_id, "attempt": token, **f.as_dict()} for f in files]
            for start in range(0, len(rows), 500):
                conn.execute(o.insert(), rows[start : start + 500])
            conn.execute(
                update(j)
                .where(j.c.id == job_id)
                .values(outputs_manifest=manifest, outputs_files=len(files), outputs_bytes=total)
            )
        return True

    def release(self, job_id: int, token: int, *, reason: str, now: datetime) -> bool:
        """Give attempt ``token`` back unfinished (its agent is stopping): the job is queued
        again, or failed if that was its last attempt. False, changing nothing, if stale."""
        j, a = ct.compute_jobs, ct.compute_job_attempts
        with self._c._write() as conn:
            row = conn.execute(
                select(j.c.state, j.c.attempt, j.c.max_attempts)
                .where(j.c.id == job_id)
                .with_for_update()
            ).one_or_none()
            if row is None or row.state != "running" or int(row.attempt) != token:
                return False
            last = token >= int(row.max_attempts)
            values: dict[str, Any] = (
                {"state": "failed", "reason": f"{reason} during attempt {token}, the last"}
                if last
                else {"state": "queued", "template_id": None, "compute_id": None}
            )
            conn.execute(
                update(j).where(j.c.id == job_id).values(worker=None, updated_at=now, **values)
            )
            conn.execute(
                update(a)
                .where(a.c.job_id == job_id, a.c.number == token)
                .values(ended_at=now, outcome="released")
            )
            self._event(
                conn,
                job_id,
                now,
                "failed" if last else "requeued",
                values.get("reason", reason),
                token,
            )
        ring(self._c)
        return True

    def cancel(self, job_id: int, *, now: datetime) -> JobRecord:
        """Cancel a job: at once if it has not started, else ask its worker to stop it.

        Raises ConflictError for a job that has already ended.
        """
        j = ct.compute_jobs
        job = self.get_job(job_id)
        rang = False
        with self._c._write() as conn:
            res = conn.execute(
                update(j)
                .where(j.c.id == job_id, j.c.state.in_(("queued", "placed")))
                .values(state="cancelled", reason="cancelled before it started", updated_at=now)
            )
            if res.rowcount == 1:
                self._event(conn, job_id, now, "cancelled", "before it started", job.attempt)
                rang = True
            else:
                res = conn.execute(
                    update(j)
                    .where(j.c.id == job_id, j.c.state == "running")
                    .values(cancel_requested=True, updated_at=now)
                )
                if res.rowcount == 1:
                    self._event(
                        conn, job_id, now, "cancel requested", "its worker stops it", job.attempt
                    )
        if rang:
            ring(self._c)  # its room is free
        job = self.get_job(job_id)
        if job.done and job.state != "cancelled":
            raise ConflictError(
                f"job {job_id} already {job.state}", hint="Only queued or running jobs cancel."
            )
        return job

    def requeue_stale(self, *, now: datetime, stale_after: timedelta) -> list[tuple[int, str]]:
        """Requeue running jobs whose worker stopped heart-beating (or fail them after their
        last attempt). Returns (job id, new state) for each job moved."""
        j, a = ct.compute_jobs, ct.compute_job_attempts
        with self._c._read() as conn:
            rows = conn.execute(
                select(j.c.id, j.c.attempt, j.c.max_attempts, j.c.worker, j.c.heartbeat_at).where(
                    j.c.state == "running", j.c.heartbeat_at < now - stale_after
                )
            ).all()
        moved = []
        for row in rows:
            silent = (now - row.heartbeat_at).total_seconds()
            last = int(row.attempt) >= int(row.max_attempts)
            why = f"worker {row.worker} silent for {silent:.0f} s during attempt {row.attempt}"
            values: dict[str, Any] = (
                {"state": "failed", "reason": f"{why}, the last of {row.max_attempts}"}
                if last
                else {"state": "queued", "template_id": None, "compute_id": None}
            )
            with self._c._write() as conn:
                res = conn.execute(
                    update(j)
                    .where(
                        j.c.id == row.id,
                        j.c.state == "running",
                        j.c.attempt == row.attempt,
                        j.c.heartbeat_at == row.heartbeat_at,
                    )
                    .values(worker=None, updated_at=now, **values)
                )
                if res.rowcount != 1:
                    continue  # it beat, ended, or another sweeper moved it
                conn.execute(
                    update(a)
                    .where(a.c.job_id == row.id, a.c.number == row.attempt)
                    .values(ended_at=now, outcome="lost")
                )
                kind = "failed" if last else "requeued"
                self._event(conn, int(row.id), now, kind, values.get("reason", why), row.attempt)
            moved.append((int(row.id), values["state"]))
        if moved:
            ring(self._c)
        return moved
