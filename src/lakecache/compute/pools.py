"""Compute resources' capacity, templates and queues in the catalog (the first layer of
:class:`~lakecache.compute.store.ComputeStore`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from lakecache.catalog import topology_tables as tt
from lakecache.compute import tables as ct
from lakecache.compute.model import (
    AGENT_DOWN_POLICIES,
    HOLDING_STATES,
    CapacityRecord,
    QueueRecord,
    Resources,
    TemplateRecord,
    parse_timeout,
)
from lakecache.compute.rows import check_name, size_of, size_values
from lakecache.errors import AlreadyExistsError, NotFoundError, UserError

if TYPE_CHECKING:
    from lakecache.catalog.db import Catalog


class PoolStore:
    """Capacity, templates and queues. Safe to share between threads."""

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
            values = size_values(total)
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
                used[cid] = used.get(cid, Resources()).plus(size_of(h, "slot_"))
                count[cid] = count.get(cid, 0) + 1
        return [
            CapacityRecord(
                compute_id=int(r["compute_id"]),
                compute=r["name"],
                site=r["site"],
                backend=r["backend"],
                total=size_of(r),
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
        check_name("template", name)
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
                        **size_values(size),
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
            size_of(r),
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
        job_timeout: timedelta | None = None,
        agent_down: str = "wait",
        now: datetime,
    ) -> QueueRecord:
        """An ordered list of templates; jobs take the first with room (``order``) or the
        first at a site with a warm cache of their inputs (``data``).

        ``job_timeout`` is the time limit of its jobs that set none. ``agent_down``
        says what its jobs do when a site's agent is down: ``wait`` for it (placed
        there, shown as waiting for the agent), or ``move`` on to the next template
        whose site has a live agent.
        """
        check_name("queue", name)
        if agent_down not in AGENT_DOWN_POLICIES:
            raise UserError(
                f"unknown agent-down policy {agent_down!r}",
                hint="Use wait (jobs wait for the site's agent) or move (on to the next site).",
            )
        timeout = parse_timeout(None if job_timeout is None else job_timeout.total_seconds())
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
                        name=name,
                        policy=policy,
                        pending_deadline_seconds=deadline,
                        job_timeout_seconds=timeout,
                        agent_down=None if agent_down == "wait" else agent_down,
                        created_at=now,
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
        return QueueRecord(int(qid), name, policy, deadline, tuple(templates), timeout, agent_down)

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
                r["job_timeout_seconds"],
                r["agent_down"] or "wait",
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
