"""Compute in the catalog: capacity, templates, queues, jobs, attempts and timelines.

Reached as ``ComputeStore(catalog)``. Every method that depends on time takes
``now`` from the caller, so tests drive a clock of their own.

Concurrency, the part callers must be able to trust:

* **Admission** is a compare-and-swap, never a decision held in one process's
  memory. A compute resource's usage is the sum of the slots its ``placed`` and
  ``running`` jobs hold; its ``admissions`` counter is read before that sum.
  Placing a job bumps the counter only if it is still the value read, and moves
  the job ``queued -> placed`` only if it is still queued, in one transaction.
  Two schedulers that saw the same free room cannot both admit into it: the
  second swap matches no row, and that scheduler plans again from fresh figures.
  Usage only grows through such a swap; releases (a job ending, or requeued)
  only free room, so a plan made before a release stays safe.
* **Attempts are fenced.** Starting a placed job bumps its ``attempt`` (the
  fencing token). Heartbeats, timeline entries and the final report carry the
  token and change nothing once it is stale: an agent that was declared dead,
  whose job was requeued and started elsewhere, can never report over the new
  attempt.
* **Requeue** of a job whose agent stopped heart-beating is a compare-and-swap
  on (state, attempt, heartbeat), so of several agents sweeping at once one
  requeues it, once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from lakecache.catalog import topology_tables as tt
from lakecache.catalog.names import check_dataset_name
from lakecache.compute import tables as ct
from lakecache.compute.model import (
    DEFAULT_MAX_ATTEMPTS,
    HOLDING_STATES,
    CapacityRecord,
    InputSpec,
    JobEvent,
    JobRecord,
    QueueRecord,
    Resources,
    TemplateRecord,
    TemplateVerdict,
)
from lakecache.compute.placement import plan_placement
from lakecache.errors import AlreadyExistsError, ConflictError, NotFoundError, UserError

if TYPE_CHECKING:
    from lakecache.catalog.db import Catalog

#: How often one admission re-plans after losing its compare-and-swap to another scheduler.
ADMIT_TRIES = 20
_NAME_HINT = "Use 1 to 64 characters: lowercase letters, digits, '.', '_' or '-'."


class _LostRace(Exception):
    """Another scheduler changed the rows this transaction expected; plan again."""


def _check_name(kind: str, name: str) -> str:
    try:
        return check_dataset_name(name)
    except UserError:
        raise UserError(f"invalid {kind} name {name!r}", hint=_NAME_HINT) from None


def _size(row: Any, prefix: str = "") -> Resources:
    return Resources(
        int(row[f"{prefix}cpu_milli"]),
        int(row[f"{prefix}memory"]),
        int(row[f"{prefix}gpu"]),
        json.loads(row[f"{prefix}resources"] or "{}"),
    )


def _size_values(size: Resources, prefix: str = "") -> dict[str, Any]:
    return {
        f"{prefix}cpu_milli": size.cpu_milli,
        f"{prefix}memory": size.memory,
        f"{prefix}gpu": size.gpu,
        f"{prefix}resources": size.named_json(),
    }


class ComputeStore:
    """Queries and transitions of compute. Safe to share between threads."""

    def __init__(self, catalog: Catalog) -> None:
        self._c = catalog

    # -- compute capacity ----------------------------------------------------------------

    def _compute_row(self, conn: Connection, name: str) -> Any:
        row = conn.execute(
            select(
                tt.compute_resources.c.id,
                tt.compute_resources.c.name,
                tt.compute_resources.c.backend,
                tt.sites.c.name.label("site"),
            )
            .join(tt.sites, tt.sites.c.id == tt.compute_resources.c.site_id)
            .where(tt.compute_resources.c.name == name)
        ).one_or_none()
        if row is None:
            raise NotFoundError(
                f"no compute resource {name!r}",
                hint="List them with `lakecache compute ls`, or add one with "
                "`lakecache compute add NAME --site SITE --cpu N --memory SIZE`.",
            )
        return row

    def set_capacity(self, compute: str, total: Resources) -> None:
        """What compute resource ``compute`` can run at once (replaces the previous figure).

        Raises NotFoundError for an unknown resource. Lowering it below what
        running jobs hold is allowed: new jobs wait until they end.
        """
        with self._c._write() as conn:
            cid = self._compute_row(conn, compute).id
            values = _size_values(total)
            res = conn.execute(
                update(ct.compute_capacity)
                .where(ct.compute_capacity.c.compute_id == cid)
                .values(**values)
            )
            if res.rowcount == 0:
                conn.execute(
                    ct.compute_capacity.insert().values(compute_id=cid, admissions=0, **values)
                )

    def capacity(self, compute_ids: Iterable[int] | None = None) -> list[CapacityRecord]:
        """Each compute resource's capacity, the slots its jobs hold, and its admission counter.

        The counter is read before the usage, so a plan built on these figures
        is safe to commit with :meth:`admit`'s compare-and-swap.
        """
        cc, j = ct.compute_capacity, ct.compute_jobs
        ledger = (
            select(
                cc,
                tt.compute_resources.c.name,
                tt.compute_resources.c.backend,
                tt.sites.c.name.label("site"),
            )
            .join(tt.compute_resources, tt.compute_resources.c.id == cc.c.compute_id)
            .join(tt.sites, tt.sites.c.id == tt.compute_resources.c.site_id)
            .order_by(tt.compute_resources.c.name)
        )
        held = select(
            j.c.compute_id,
            j.c.slot_cpu_milli,
            j.c.slot_memory,
            j.c.slot_gpu,
            j.c.slot_resources,
        ).where(j.c.state.in_(HOLDING_STATES))
        if compute_ids is not None:
            ids = list(compute_ids)
            ledger = ledger.where(cc.c.compute_id.in_(ids))
            held = held.where(j.c.compute_id.in_(ids))
        with self._c._read() as conn:
            rows = conn.execute(ledger).mappings().all()  # the counter first, then the usage
            used: dict[int, Resources] = {}
            count: dict[int, int] = {}
            for h in conn.execute(held).mappings():
                cid = int(h["compute_id"])
                used[cid] = used.get(cid, Resources()).plus(_size(h, "slot_"))
                count[cid] = count.get(cid, 0) + 1
        return [
            CapacityRecord(
                compute_id=int(r["compute_id"]),
                compute=r["name"],
                site=r["site"],
                backend=r["backend"],
                total=_size(r),
                used=used.get(int(r["compute_id"]), Resources()),
                admissions=int(r["admissions"]),
                jobs=count.get(int(r["compute_id"]), 0),
            )
            for r in rows
        ]

    # -- templates -----------------------------------------------------------------------

    def add_template(
        self, name: str, compute: str, size: Resources, image: str | None, now: datetime
    ) -> TemplateRecord:
        """A named size on a compute resource. Refused if larger than the resource itself."""
        _check_name("template", name)
        caps = {c.compute: c for c in self.capacity()}
        with self._c._read() as conn:
            comp = self._compute_row(conn, compute)
        cap = caps.get(compute)
        if cap is None:
            raise UserError(
                f"compute resource {compute!r} has no capacity set",
                hint=f"Give it one: `lakecache compute add {compute} ... --cpu N --memory SIZE`.",
            )
        if not size.fits_in(cap.total):
            raise UserError(
                f"template {name!r} ({size.describe()}) is larger than compute resource "
                f"{compute!r} ({cap.total.describe()})",
                hint="Make the template smaller, or the resource's capacity larger.",
            )
        try:
            with self._c._write() as conn:
                res = conn.execute(
                    ct.compute_templates.insert().values(
                        name=name,
                        compute_id=comp.id,
                        image=image,
                        created_at=now,
                        **_size_values(size),
                    )
                )
                (tid,) = res.inserted_primary_key or (0,)
        except sa_exc.IntegrityError:
            raise AlreadyExistsError(
                f"template {name!r} already exists",
                hint="List templates with `lakecache template ls`.",
            ) from None
        return TemplateRecord(
            int(tid), name, compute, int(comp.id), comp.site, comp.backend, size, image
        )

    def _template_query(self) -> Any:
        tpl = ct.compute_templates
        return (
            select(
                tpl,
                tt.compute_resources.c.name.label("compute"),
                tt.compute_resources.c.backend,
                tt.sites.c.name.label("site"),
            )
            .join(tt.compute_resources, tt.compute_resources.c.id == tpl.c.compute_id)
            .join(tt.sites, tt.sites.c.id == tt.compute_resources.c.site_id)
        )

    @staticmethod
    def _template(r: Any) -> TemplateRecord:
        return TemplateRecord(
            int(r["id"]),
            r["name"],
            r["compute"],
            int(r["compute_id"]),
            r["site"],
            r["backend"],
            _size(r),
            r["image"],
        )

    def list_templates(self) -> list[TemplateRecord]:
        """Every template, by name."""
        q = self._template_query().order_by(ct.compute_templates.c.name)
        with self._c._read() as conn:
            return [self._template(r) for r in conn.execute(q).mappings()]

    def get_template(self, name: str) -> TemplateRecord:
        """The template called ``name``; NotFoundError with a hint if there is none."""
        q = self._template_query().where(ct.compute_templates.c.name == name)
        with self._c._read() as conn:
            row = conn.execute(q).mappings().one_or_none()
        if row is None:
            raise NotFoundError(
                f"no template {name!r}",
                hint="List templates with `lakecache template ls`, or add one with "
                "`lakecache template add NAME --compute RESOURCE --cpu N --memory SIZE`.",
            )
        return self._template(row)

    def remove_template(self, name: str) -> None:
        """Remove a template that no queue names and no job holds a slot of."""
        tpl = self.get_template(name)
        qt, j = ct.compute_queue_templates, ct.compute_jobs
        with self._c._write() as conn:
            queues = conn.execute(
                select(ct.compute_queues.c.name)
                .join(qt, qt.c.queue_id == ct.compute_queues.c.id)
                .where(qt.c.template_id == tpl.id)
            ).all()
            if queues:
                raise UserError(
                    f"template {name!r} is in queue(s) {', '.join(r[0] for r in queues)}",
                    hint="Remove those queues first, or keep the template.",
                )
            busy = conn.scalar(
                select(func.count()).where(j.c.template_id == tpl.id, j.c.state.in_(HOLDING_STATES))
            )
            if busy:
                raise UserError(
                    f"template {name!r} has {busy} job(s) placed or running",
                    hint="Wait for them to end, or cancel them (`lakecache job cancel ID`).",
                )
            conn.execute(ct.compute_templates.delete().where(ct.compute_templates.c.id == tpl.id))

    def remove_compute(self, name: str) -> None:
        """Remove a compute resource that has no templates (its capacity goes with it)."""
        tpls = [t.name for t in self.list_templates() if t.compute == name]
        if tpls:
            raise UserError(
                f"compute resource {name!r} has template(s) {', '.join(tpls)}",
                hint="Remove them first with `lakecache template rm NAME`.",
            )
        with self._c._write() as conn:
            cid = self._compute_row(conn, name).id
            conn.execute(tt.compute_resources.delete().where(tt.compute_resources.c.id == cid))

    # -- queues --------------------------------------------------------------------------

    def add_queue(
        self,
        name: str,
        templates: Sequence[str],
        *,
        policy: str = "order",
        pending_deadline: timedelta | None = None,
        now: datetime,
    ) -> QueueRecord:
        """An ordered list of templates; jobs take the first with room (``order``) or the
        first at a site with a warm cache of their inputs (``data``)."""
        _check_name("queue", name)
        if policy not in ct.QUEUE_POLICIES:
            raise UserError(
                f"unknown queue policy {policy!r}",
                hint="Use order (strict order) or data (a warm cache first).",
            )
        if not templates:
            raise UserError(
                f"queue {name!r} needs at least one template",
                hint="Name them in order: --template onprem-small --template cloud-small.",
            )
        if len(set(templates)) != len(templates):
            raise UserError(f"queue {name!r} names a template twice: {', '.join(templates)}")
        if pending_deadline is not None and pending_deadline.total_seconds() <= 0:
            raise UserError("the pending deadline must be positive", hint="Give e.g. 10m or 1h.")
        tpls = [self.get_template(t) for t in templates]
        deadline = None if pending_deadline is None else int(pending_deadline.total_seconds())
        try:
            with self._c._write() as conn:
                res = conn.execute(
                    ct.compute_queues.insert().values(
                        name=name, policy=policy, pending_deadline_seconds=deadline, created_at=now
                    )
                )
                (qid,) = res.inserted_primary_key or (0,)
                for pos, tpl in enumerate(tpls):
                    conn.execute(
                        ct.compute_queue_templates.insert().values(
                            queue_id=qid, position=pos, template_id=tpl.id
                        )
                    )
        except sa_exc.IntegrityError:
            raise AlreadyExistsError(
                f"queue {name!r} already exists", hint="List queues with `lakecache queue ls`."
            ) from None
        return QueueRecord(int(qid), name, policy, deadline, tuple(templates))

    def list_queues(self) -> list[QueueRecord]:
        """Every queue with its templates in order."""
        q, qt = ct.compute_queues, ct.compute_queue_templates
        with self._c._read() as conn:
            rows = conn.execute(select(q).order_by(q.c.name)).mappings().all()
            links = conn.execute(
                select(qt.c.queue_id, ct.compute_templates.c.name)
                .join(ct.compute_templates, ct.compute_templates.c.id == qt.c.template_id)
                .order_by(qt.c.queue_id, qt.c.position)
            ).all()
        names: dict[int, list[str]] = {}
        for qid, tname in links:
            names.setdefault(int(qid), []).append(tname)
        return [
            QueueRecord(
                int(r["id"]),
                r["name"],
                r["policy"],
                r["pending_deadline_seconds"],
                tuple(names.get(int(r["id"]), [])),
            )
            for r in rows
        ]

    def get_queue(self, name: str) -> QueueRecord:
        """The queue called ``name``; NotFoundError with a hint if there is none."""
        for queue in self.list_queues():
            if queue.name == name:
                return queue
        raise NotFoundError(
            f"no queue {name!r}",
            hint="List queues with `lakecache queue ls`, or add one with "
            "`lakecache queue add NAME --template TEMPLATE ...`.",
        )

    def _queue_templates(self, queue_id: int) -> list[TemplateRecord]:
        qt = ct.compute_queue_templates
        q = (
            self._template_query()
            .join(qt, qt.c.template_id == ct.compute_templates.c.id)
            .where(qt.c.queue_id == queue_id)
            .order_by(qt.c.position)
        )
        with self._c._read() as conn:
            return [self._template(r) for r in conn.execute(q).mappings()]

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
        now: datetime,
    ) -> JobRecord:
        """Queue a job. Refused if it is larger than every template of the queue.

        Inputs must already be resolved to commits (the SDK and CLI do it). The
        job is only queued here; :meth:`admit` places it.
        """
        if not command:
            raise UserError("a job needs a command", hint="Put it after --: job run -- CMD ARGS.")
        if max_attempts < 1:
            raise UserError(f"max_attempts must be at least 1, not {max_attempts}")
        names = [i.env_var for i in inputs]
        if len(set(names)) != len(names):
            raise UserError(
                "two inputs would share one environment variable",
                hint="Name them apart: --input train=xray@v1 --input test=xray@v2.",
            )
        q = self.get_queue(queue)
        templates = self._queue_templates(q.id)
        if not any(request.fits_in(t.size) for t in templates):
            sizes = "; ".join(f"{t.name}: {t.size.describe()}" for t in templates)
            raise UserError(
                f"the job ({request.describe()}) is larger than every template of queue "
                f"{queue!r} ({sizes}); it would wait forever",
                hint="Ask for less, or add a larger template to the queue.",
            )
        deadline = (
            None
            if q.pending_deadline_seconds is None
            else now + timedelta(seconds=q.pending_deadline_seconds)
        )
        with self._c._write() as conn:
            res = conn.execute(
                ct.compute_jobs.insert().values(
                    queue_id=q.id,
                    state="queued",
                    command=json.dumps(list(command)),
                    env=json.dumps(env or {}),
                    inputs=json.dumps([i.as_dict() for i in inputs]),
                    image=image,
                    submitted_by=submitted_by,
                    created_at=now,
                    updated_at=now,
                    deadline_at=deadline,
                    attempt=0,
                    max_attempts=max_attempts,
                    cancel_requested=False,
                    **_size_values(request),
                    **_size_values(Resources(), "slot_"),
                )
            )
            (job_id,) = res.inserted_primary_key or (0,)
            self._event(conn, int(job_id), now, "queued", f"on queue {queue}", 0)
        return self.get_job(int(job_id))

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
        return JobRecord(
            id=int(r["id"]),
            queue=r["queue_name"],
            state=r["state"],
            command=tuple(json.loads(r["command"])),
            env=json.loads(r["env"]),
            inputs=tuple(InputSpec.from_dict(d) for d in json.loads(r["inputs"])),
            image=r["image"],
            request=_size(r),
            submitted_by=r["submitted_by"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            deadline_at=r["deadline_at"],
            template=r["template_name"],
            compute=r["compute_name"],
            site=r["site_name"],
            slot=_size(r, "slot_"),
            placement=tuple(TemplateVerdict(**v) for v in json.loads(r["placement"] or "[]")),
            attempt=int(r["attempt"]),
            max_attempts=int(r["max_attempts"]),
            worker=r["worker"],
            heartbeat_at=r["heartbeat_at"],
            cancel_requested=bool(r["cancel_requested"]),
            exit_code=r["exit_code"],
            reason=r["reason"],
            workdir=r["workdir"],
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
            ct.compute_job_events.insert().values(
                job_id=job_id, at=now, kind=kind, detail=detail, attempt=attempt
            )
        )

    # -- admission -----------------------------------------------------------------------

    def warm_sites(self, inputs: Sequence[InputSpec]) -> frozenset[str] | None:
        """Sites with a ready cache of every ``cached`` input; None if there is no such input."""
        cached = [i for i in inputs if i.mode == "cached"]
        if not cached:
            return None
        from lakecache.catalog.topology import Topology

        topology = Topology(self._c)
        sites: set[str] | None = None
        for spec in cached:
            here = {
                c.site
                for c in topology.list_caches(dataset=spec.dataset, states=("ready",))
                if c.commit_id == spec.commit_id and c.subpath == ""
            }
            sites = here if sites is None else sites & here
        return frozenset(sites or ())

    def admit(self, job_id: int, *, now: datetime) -> JobRecord | None:
        """Place a queued job on the first template of its queue with room (see the module's
        notes on concurrency). Returns the placed job, or None if it must wait (or is no
        longer queued). The placement explanation is kept on the job either way."""
        for _ in range(ADMIT_TRIES):
            job = self.get_job(job_id)
            if job.state != "queued":
                return None
            queue = self.get_queue(job.queue)
            templates = self._queue_templates(queue.id)
            caps = {c.compute_id: c for c in self.capacity({t.compute_id for t in templates})}
            chosen, verdicts = plan_placement(
                job.request,
                templates,
                {cid: c.free for cid, c in caps.items()},
                policy=queue.policy,
                warm_sites=self.warm_sites(job.inputs),
            )
            if chosen is None:
                self._note_placement(job, verdicts, now)
                return None
            try:
                self._commit_placement(job, chosen, caps[chosen.compute_id], verdicts, now)
            except _LostRace:
                continue
            return self.get_job(job_id)
        return None  # lost every race this round; the next pass tries again

    def _commit_placement(
        self,
        job: JobRecord,
        chosen: TemplateRecord,
        cap: CapacityRecord,
        verdicts: Sequence[TemplateVerdict],
        now: datetime,
    ) -> None:
        cc, j = ct.compute_capacity, ct.compute_jobs
        why = next(v.detail for v in verdicts if v.verdict == "chosen")
        with self._c._write() as conn:
            swapped = conn.execute(
                update(cc)
                .where(cc.c.compute_id == cap.compute_id, cc.c.admissions == cap.admissions)
                .values(admissions=cc.c.admissions + 1)
            )
            if swapped.rowcount != 1:
                raise _LostRace
            placed = conn.execute(
                update(j)
                .where(j.c.id == job.id, j.c.state == "queued")
                .values(
                    state="placed",
                    template_id=chosen.id,
                    compute_id=chosen.compute_id,
                    placement=json.dumps([v.as_dict() for v in verdicts]),
                    updated_at=now,
                    **_size_values(chosen.size, "slot_"),
                )
            )
            if placed.rowcount != 1:
                raise _LostRace  # placed or cancelled meanwhile; the rollback undoes the bump
            self._event(
                conn,
                job.id,
                now,
                "placed",
                f"on {chosen.name} ({chosen.compute} at {chosen.site}): {why}",
                job.attempt,
            )

    def _note_placement(
        self, job: JobRecord, verdicts: Sequence[TemplateVerdict], now: datetime
    ) -> None:
        """Keep why a waiting job waits; written only when the reasons change."""
        if tuple(verdicts) == job.placement:
            return
        j = ct.compute_jobs
        summary = "; ".join(f"{v.template}: {v.verdict}" for v in verdicts)
        with self._c._write() as conn:
            res = conn.execute(
                update(j)
                .where(j.c.id == job.id, j.c.state == "queued")
                .values(placement=json.dumps([v.as_dict() for v in verdicts]))
            )
            if res.rowcount == 1:
                self._event(conn, job.id, now, "waiting", f"no template has room ({summary})", 0)

    def schedule(self, *, now: datetime, limit: int = 1000) -> int:
        """One scheduler pass: fail queued jobs past their deadline, then admit the others
        oldest first. Safe to run in any number of processes at once. Returns jobs placed."""
        self.fail_overdue(now=now)
        placed = 0
        waiting: set[tuple[str, Resources, tuple[InputSpec, ...]]] = set()
        for job in self.list_jobs(states=("queued",), limit=limit):
            shape = (job.queue, job.request, job.inputs)
            if shape in waiting:
                continue  # an identical older job found no room this pass
            if self.admit(job.id, now=now) is not None:
                placed += 1
            else:
                waiting.add(shape)
        return placed

    def fail_overdue(self, *, now: datetime) -> list[int]:
        """Fail every queued job whose queue's pending deadline has passed: it fits nowhere."""
        j = ct.compute_jobs
        with self._c._read() as conn:
            rows = conn.execute(
                select(j.c.id, j.c.placement, j.c.deadline_at, j.c.created_at).where(
                    j.c.state == "queued", j.c.deadline_at.is_not(None), j.c.deadline_at < now
                )
            ).all()
        failed = []
        for row in rows:
            waited = (row.deadline_at - row.created_at).total_seconds()
            verdicts = json.loads(row.placement or "[]")
            why = "; ".join(f"{v['template']}: {v['verdict']}" for v in verdicts)
            reason = f"fits nowhere: no template had room within {waited:g} s" + (
                f" ({why})" if why else ""
            )
            with self._c._write() as conn:
                res = conn.execute(
                    update(j)
                    .where(j.c.id == row.id, j.c.state == "queued")
                    .values(state="failed", reason=reason, updated_at=now)
                )
                if res.rowcount == 1:
                    self._event(conn, int(row.id), now, "failed", reason, 0)
                    failed.append(int(row.id))
        return failed

    # -- running: claims, heartbeats and reports, all fenced ------------------------------

    def placed_at(self, site: str, backends: Iterable[str]) -> list[JobRecord]:
        """Placed jobs waiting to start on ``site``'s compute of one of ``backends``."""
        j = ct.compute_jobs
        q = (
            self._job_query()
            .where(
                j.c.state == "placed",
                tt.sites.c.name == site,
                tt.compute_resources.c.backend.in_(list(backends)),
            )
            .order_by(j.c.id)
        )
        with self._c._read() as conn:
            return [self._job(r) for r in conn.execute(q).mappings()]

    def claim(self, job: JobRecord, worker: str, *, now: datetime) -> int | None:
        """Start a placed job: ``placed -> running`` with a new attempt number, which is the
        fencing token the worker passes to every later call. None if another worker took it."""
        j = ct.compute_jobs
        token = job.attempt + 1
        with self._c._write() as conn:
            res = conn.execute(
                update(j)
                .where(j.c.id == job.id, j.c.state == "placed", j.c.attempt == job.attempt)
                .values(
                    state="running",
                    attempt=token,
                    worker=worker,
                    heartbeat_at=now,
                    updated_at=now,
                    workdir=None,
                )
            )
            if res.rowcount != 1:
                return None
            conn.execute(
                ct.compute_job_attempts.insert().values(
                    job_id=job.id,
                    number=token,
                    worker=worker,
                    compute_id=select(j.c.compute_id).where(j.c.id == job.id).scalar_subquery(),
                    started_at=now,
                )
            )
            self._event(conn, job.id, now, "claimed", f"by {worker}", token)
        return token

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
    ) -> bool:
        """Add to the timeline of attempt ``token`` (and set its folder); False if stale."""
        with self._c._write() as conn:
            if not self._fenced(conn, job_id, token):
                return False
            if workdir is not None:
                conn.execute(
                    update(ct.compute_jobs)
                    .where(ct.compute_jobs.c.id == job_id)
                    .values(workdir=workdir)
                )
            self._event(conn, job_id, now, kind, detail, token)
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
        """``running -> succeeded | failed | cancelled`` for attempt ``token``; frees the slot.

        Returns False, changing nothing, when the token is stale.
        """
        if state not in ("succeeded", "failed", "cancelled"):
            raise ValueError(f"not a final job state: {state!r}")
        j, a = ct.compute_jobs, ct.compute_job_attempts
        with self._c._write() as conn:
            res = conn.execute(
                update(j)
                .where(j.c.id == job_id, j.c.state == "running", j.c.attempt == token)
                .values(
                    state=state, exit_code=exit_code, reason=reason, updated_at=now, worker=None
                )
            )
            if res.rowcount != 1:
                return False
            conn.execute(
                update(a)
                .where(a.c.job_id == job_id, a.c.number == token)
                .values(ended_at=now, exit_code=exit_code, outcome=state)
            )
            code = "" if exit_code is None else f"exit code {exit_code}"
            detail = ", ".join(x for x in (code, reason or "") if x)
            self._event(conn, job_id, now, state, detail or state, token)
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
        return True

    def cancel(self, job_id: int, *, now: datetime) -> JobRecord:
        """Cancel a job: at once if it has not started, else ask its worker to stop it.

        Raises ConflictError for a job that has already ended.
        """
        j = ct.compute_jobs
        job = self.get_job(job_id)
        with self._c._write() as conn:
            res = conn.execute(
                update(j)
                .where(j.c.id == job_id, j.c.state.in_(("queued", "placed")))
                .values(state="cancelled", reason="cancelled before it started", updated_at=now)
            )
            if res.rowcount == 1:
                self._event(conn, job_id, now, "cancelled", "before it started", job.attempt)
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
        return moved
