"""Jobs in the catalog: submit, read, list, timelines and collected outputs (the second
layer of :class:`~lakecache.compute.store.ComputeStore`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from lakecache.catalog import topology_tables as tt
from lakecache.compute import tables as ct
from lakecache.compute.doorbell import ring
from lakecache.compute.model import (
    DEFAULT_MAX_ATTEMPTS,
    BatchRefusedError,
    InputSpec,
    JobEvent,
    JobRecord,
    JobSpec,
    OutputFile,
    QueueRecord,
    Resources,
    TemplateRecord,
    parse_timeout,
)
from lakecache.compute.pools import PoolStore
from lakecache.compute.rows import size_of, size_values
from lakecache.errors import NotFoundError, UserError

#: A timeline entry's insert, built once (several a job, on every job's path).
_EVENT_INSERT = ct.compute_job_events.insert()


class JobQueries(PoolStore):
    """Submitting and reading jobs. Safe to share between threads."""

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
        submitted_by: str,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout_seconds: int | None = None,
        now: datetime,
    ) -> JobRecord:
        """Queue a job. Refused if it is larger than every template of the queue.

        Inputs must already be resolved to commits (the SDK and CLI do it). The
        job is only queued here; :meth:`admit` places it. ``timeout_seconds`` limits
        each attempt's run (default: the queue's job time limit, if it has one).
        """
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
        return self.submit_many([spec], submitted_by=submitted_by, now=now)[0]

    def submit_many(
        self, specs: Sequence[JobSpec], *, submitted_by: str, now: datetime
    ) -> list[JobRecord]:
        """Queue many jobs in one transaction (a flow's fan-out, a sweep); their records,
        in the order given. Every job is checked first, as :meth:`submit` checks one: if
        one is refused none is queued (:class:`BatchRefusedError` says which; a batch of
        one raises that job's own error). Nothing is placed here; :meth:`admit_many` does.
        """
        queues: dict[str, tuple[QueueRecord, list[TemplateRecord]]] = {}
        rows = []
        for index, spec in enumerate(specs):
            try:
                rows.append(self._job_row(spec, queues, submitted_by, now))
            except UserError as exc:
                if len(specs) == 1:
                    raise
                raise BatchRefusedError(index, len(specs), exc) from None
        if not rows:
            return []
        j = ct.compute_jobs
        with self._c._write() as conn:
            # One statement for all (insertmanyvalues), ids returned in the order given.
            inserted = conn.execute(
                j.insert().returning(j.c.id, sort_by_parameter_order=True), rows
            )
            ids = [int(i) for i in inserted.scalars()]
            conn.execute(
                ct.compute_job_events.insert(),
                [
                    {
                        "job_id": i,
                        "at": now,
                        "kind": "queued",
                        "detail": f"on queue {spec.queue}",
                        "attempt": 0,
                    }
                    for i, spec in zip(ids, specs, strict=True)
                ],
            )
        ring(self._c)
        return self.get_jobs(ids)

    def _job_row(
        self,
        spec: JobSpec,
        queues: dict[str, tuple[QueueRecord, list[TemplateRecord]]],
        submitted_by: str,
        now: datetime,
    ) -> dict[str, Any]:
        """The row that queues ``spec``, once it passed every check; UserError if not."""
        timeout = parse_timeout(spec.timeout_seconds)
        if not spec.command:
            raise UserError("a job needs a command", hint="Put it after --: job run -- CMD ARGS.")
        if spec.max_attempts < 1:
            raise UserError(f"max_attempts must be at least 1, not {spec.max_attempts}")
        names = [i.env_var for i in spec.inputs]
        if len(set(names)) != len(names):
            raise UserError(
                "two inputs would share one environment variable",
                hint="Name them apart: --input train=xray@v1 --input test=xray@v2.",
            )
        if spec.queue not in queues:
            q = self.get_queue(spec.queue)
            queues[spec.queue] = (q, self._queue_templates(q.id))
        q, templates = queues[spec.queue]
        request = spec.request
        if not any(request.fits_in(t.size) for t in templates):
            sizes = "; ".join(f"{t.name}: {t.size.describe()}" for t in templates)
            raise UserError(
                f"the job ({request.describe()}) is larger than every template of queue "
                f"{spec.queue!r} ({sizes}); it would wait forever",
                hint="Ask for less, or add a larger template to the queue.",
            )
        if timeout is None:
            timeout = q.job_timeout_seconds
        deadline = (
            None
            if q.pending_deadline_seconds is None
            else now + timedelta(seconds=q.pending_deadline_seconds)
        )
        return dict(
            queue_id=q.id,
            state="queued",
            command=json.dumps(list(spec.command)),
            env=json.dumps(dict(spec.env)),
            inputs=json.dumps([i.as_dict() for i in spec.inputs]),
            image=spec.image,
            submitted_by=submitted_by,
            created_at=now,
            updated_at=now,
            deadline_at=deadline,
            attempt=0,
            max_attempts=spec.max_attempts,
            timeout_seconds=timeout,
            cancel_requested=False,
            **size_values(request),
            **size_values(Resources(), "slot_"),
        )

    def get_jobs(self, job_ids: Sequence[int]) -> list[JobRecord]:
        """The jobs with these ids, in the order given (one query); NotFoundError for one
        that does not exist."""
        found: dict[int, JobRecord] = {}
        ids = list(job_ids)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            with self._c._read() as conn:
                rows = conn.execute(self._job_query().where(ct.compute_jobs.c.id.in_(part)))
                for r in rows.mappings():
                    found[int(r["id"])] = self._job(r)
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFoundError(f"no job {missing[0]}", hint="List jobs with `lakecache job ls`.")
        return [found[i] for i in ids]

    def _job_query(self) -> Any:
        j = ct.compute_jobs
        return (
            select(
                j,
                ct.compute_queues.c.name.label("queue_name"),
                ct.compute_templates.c.name.label("template_name"),
                tt.compute_resources.c.name.label("compute_name"),
                tt.sites.c.name.label("site_name"),
            )
            .join(ct.compute_queues, ct.compute_queues.c.id == j.c.queue_id)
            .outerjoin(ct.compute_templates, ct.compute_templates.c.id == j.c.template_id)
            .outerjoin(tt.compute_resources, tt.compute_resources.c.id == j.c.compute_id)
            .outerjoin(tt.sites, tt.sites.c.id == tt.compute_resources.c.site_id)
        )

    @staticmethod
    def _job(r: Any) -> JobRecord:
        """A row of :meth:`_job_query` as a record, through the one converter of jobs."""
        return JobRecord.from_dict(
            {
                **r,
                "queue": r["queue_name"],
                "command": json.loads(r["command"]),
                "env": json.loads(r["env"]),
                "inputs": json.loads(r["inputs"]),
                "request": size_of(r).as_json(),
                "template": r["template_name"],
                "compute": r["compute_name"],
                "site": r["site_name"],
                "slot": size_of(r, "slot_").as_json(),
                "placement": json.loads(r["placement"] or "[]"),
            }
        )

    def get_job(self, job_id: int) -> JobRecord:
        """The job with id ``job_id``; NotFoundError with a hint if there is none."""
        with self._c._read() as conn:
            row = (
                conn.execute(self._job_query().where(ct.compute_jobs.c.id == job_id))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise NotFoundError(f"no job {job_id}", hint="List jobs with `lakecache job ls`.")
        return self._job(row)

    def list_jobs(
        self,
        *,
        states: Sequence[str] | None = None,
        queue: str | None = None,
        site: str | None = None,
        limit: int | None = None,
    ) -> list[JobRecord]:
        """Jobs, oldest first, optionally only in ``states``, of ``queue``, placed at ``site``."""
        j = ct.compute_jobs
        q = self._job_query().order_by(j.c.id)
        if states:
            q = q.where(j.c.state.in_(list(states)))
        if queue:
            q = q.where(ct.compute_queues.c.name == queue)
        if site:
            q = q.where(tt.sites.c.name == site)
        if limit:
            q = q.limit(limit)
        with self._c._read() as conn:
            return [self._job(r) for r in conn.execute(q).mappings()]

    def timeline(self, job_id: int) -> list[JobEvent]:
        """The job's events in the order they happened."""
        e = ct.compute_job_events
        with self._c._read() as conn:
            rows = conn.execute(
                select(e.c.at, e.c.kind, e.c.detail, e.c.attempt)
                .where(e.c.job_id == job_id)
                .order_by(e.c.id)
            ).all()
        return [JobEvent(r.at, r.kind, r.detail, int(r.attempt)) for r in rows]

    @staticmethod
    def _event(
        conn: Connection, job_id: int, now: datetime, kind: str, detail: str, attempt: int
    ) -> None:
        conn.execute(
            _EVENT_INSERT,
            {"job_id": job_id, "at": now, "kind": kind, "detail": detail, "attempt": attempt},
        )

    def outputs(self, job_id: int) -> list[OutputFile]:
        """The files of the job's collected outputs, by path (none until an attempt ended
        and its outputs were collected). NotFoundError for an unknown job."""
        self.get_job(job_id)
        o = ct.compute_job_outputs
        with self._c._read() as conn:
            rows = conn.execute(
                select(o.c.path, o.c.digest, o.c.size, o.c.mode)
                .where(o.c.job_id == job_id)
                .order_by(o.c.path)
            ).all()
        return [OutputFile(r.path, r.digest, int(r.size), int(r.mode)) for r in rows]
