"""Admission: which template a queued job takes, by compare-and-swap on the resource's
admission counter (the third layer of :class:`~lakecache.compute.store.ComputeStore`;
see its notes on concurrency)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, update

from lakecache.catalog import tables as t
from lakecache.compute import tables as ct
from lakecache.compute.doorbell import ring
from lakecache.compute.jobs import JobQueries
from lakecache.compute.model import (
    CapacityRecord,
    InputSpec,
    JobRecord,
    Resources,
    TemplateRecord,
    TemplateVerdict,
)
from lakecache.compute.placement import plan_placement
from lakecache.compute.rows import LostRace, size_of, size_values

#: A site whose job runners all ran no pass for this long has its agent down.
RUNNER_SEEN_WITHIN = timedelta(seconds=30)
#: How often one admission re-plans after losing its compare-and-swap to another scheduler.
ADMIT_TRIES = 20
#: Queued jobs one admission transaction places at most.
ADMIT_BATCH = 200


class Admission(JobQueries):
    """Placing queued jobs, failing the overdue. Safe to run in any number of processes."""

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
        placed = self.admit_many([job_id], now=now)
        return placed[0] if placed else None

    def admit_many(self, job_ids: Sequence[int], *, now: datetime) -> list[JobRecord]:
        """Place the queued jobs among ``job_ids``, oldest first, each on the first template
        of its queue with room once the ones before it took theirs: one snapshot of the
        capacity, one plan, and one transaction that swaps the admission counter of every
        resource it places on (see the module's notes on concurrency). A lost swap plans
        again from fresh figures. Returns the jobs placed; the others keep why they wait
        (a job of the same queue, size and inputs as one that found no room is passed
        over: it would find none either)."""
        placed, _ = self._admit(job_ids, now=now)
        return self.get_jobs(placed)

    def _admit(
        self,
        job_ids: Sequence[int],
        *,
        now: datetime,
        full: set[tuple[object, ...]] | None = None,
    ) -> tuple[list[int], set[tuple[object, ...]]]:
        """:meth:`admit_many`: the ids placed, and the shapes that found no room (``full``:
        shapes known to find none already, passed over)."""
        ids = sorted(set(job_ids))
        for _ in range(ADMIT_TRIES):
            # The counters first, then which jobs are still queued: a job another scheduler
            # placed before the counters were read is no longer queued here (its slot is in
            # the usage, never counted twice), and one placed after them fails the swap.
            caps = {c.compute_id: c for c in self.capacity()}
            jobs = self._fail_missing_inputs(self._queued(ids), now)
            if not jobs:
                return [], set()
            queues = {q.id: q for q in self.list_queues()}
            templates = {qid: self._queue_templates(qid) for qid in {j.queue_id for j in jobs}}
            free = {cid: c.free for cid, c in caps.items()}
            live: set[str] | None = None
            warm: dict[tuple[InputSpec, ...], frozenset[str] | None] = {}
            plan: list[tuple[_Queued, TemplateRecord, tuple[TemplateVerdict, ...]]] = []
            waiting: list[tuple[_Queued, tuple[TemplateVerdict, ...]]] = []
            no_room: set[tuple[object, ...]] = set()
            for job in jobs:
                if job.shape in no_room or (full is not None and job.shape in full):
                    continue  # one just like it found no room
                queue, tpls = queues[job.queue_id], templates[job.queue_id]
                down: frozenset[str] = frozenset()
                if queue.agent_down == "move":
                    if live is None:
                        live = self.sites_with_runner(now=now)
                    down = frozenset({t.site for t in tpls} - live)
                if job.inputs not in warm:
                    warm[job.inputs] = self.warm_sites(job.inputs)
                chosen, verdicts = plan_placement(
                    job.request,
                    tpls,
                    free,
                    policy=queue.policy,
                    warm_sites=warm[job.inputs],
                    down_sites=down,
                )
                if chosen is None:
                    waiting.append((job, verdicts))
                    no_room.add(job.shape)
                else:
                    free[chosen.compute_id] = free[chosen.compute_id].minus(chosen.size)
                    plan.append((job, chosen, verdicts))
            try:
                placed = self._commit_placements(plan, caps, now)
            except LostRace:
                continue
            self._note_placements(waiting, now)
            return placed, no_room
        return [], set()  # lost every race this round; the next pass tries again

    def _queued(self, ids: Sequence[int]) -> list[_Queued]:
        """The jobs among ``ids`` still queued, oldest first, as admission needs them (no
        joins, no full records: every pass of every agent reads them)."""
        j = ct.compute_jobs
        cols = (
            j.c.id,
            j.c.queue_id,
            j.c.attempt,
            j.c.inputs,
            j.c.placement,
            j.c.cpu_milli,
            j.c.memory,
            j.c.gpu,
            j.c.resources,
        )
        out: list[_Queued] = []
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            with self._c._read() as conn:
                rows = conn.execute(
                    select(*cols).where(j.c.id.in_(part), j.c.state == "queued").order_by(j.c.id)
                )
                out.extend(_Queued(r) for r in rows.mappings())
        return out

    def _fail_missing_inputs(self, jobs: Sequence[_Queued], now: datetime) -> list[_Queued]:
        """The jobs whose inputs all still exist; the others are failed, saying which is gone."""
        out: list[_Queued] = []
        known: dict[tuple[str, str], bool] = {}
        for job in jobs:
            gone = self._missing_input(job.inputs, known)
            if gone is None:
                out.append(job)
            else:
                self._fail_queued(job.id, gone, now)
        return out

    def _commit_placements(
        self,
        plan: Sequence[tuple[_Queued, TemplateRecord, tuple[TemplateVerdict, ...]]],
        caps: Mapping[int, CapacityRecord],
        now: datetime,
    ) -> list[int]:
        """Make ``plan`` real in one transaction; the ids of the jobs placed. LostRace (and
        nothing changed) when another scheduler admitted on one of its resources since
        ``caps`` was read. A job no longer queued (cancelled meanwhile) is left out."""
        if not plan:
            return []
        cc, j = ct.compute_capacity, ct.compute_jobs
        placed: list[int] = []
        with self._c._write() as conn:
            for cid in sorted({chosen.compute_id for _, chosen, _ in plan}):
                swapped = conn.execute(
                    update(cc)
                    .where(cc.c.compute_id == cid, cc.c.admissions == caps[cid].admissions)
                    .values(admissions=cc.c.admissions + 1)
                )
                if swapped.rowcount != 1:
                    raise LostRace  # the rollback undoes the swaps made so far
            events = []
            for job, chosen, verdicts in plan:
                res = conn.execute(
                    update(j)
                    .where(j.c.id == job.id, j.c.state == "queued")
                    .values(
                        state="placed",
                        template_id=chosen.id,
                        compute_id=chosen.compute_id,
                        placement=json.dumps([v.as_dict() for v in verdicts]),
                        updated_at=now,
                        **size_values(chosen.size, "slot_"),
                    )
                )
                if res.rowcount != 1:
                    continue  # cancelled meanwhile: its planned room stays free
                why = next(v.detail for v in verdicts if v.verdict == "chosen")
                events.append(
                    {
                        "job_id": job.id,
                        "at": now,
                        "kind": "placed",
                        "detail": f"on {chosen.name} ({chosen.compute} at {chosen.site}): {why}",
                        "attempt": job.attempt,
                    }
                )
                placed.append(job.id)
            if events:
                conn.execute(ct.compute_job_events.insert(), events)
        if placed:
            ring(self._c)
        return placed

    def _note_placements(
        self, waiting: Sequence[tuple[_Queued, tuple[TemplateVerdict, ...]]], now: datetime
    ) -> None:
        """Keep why waiting jobs wait; written only for those whose reasons changed."""
        changed = [
            (job, v)
            for job, v in waiting
            if json.loads(job.placement or "[]") != [x.as_dict() for x in v]
        ]
        if not changed:
            return
        j = ct.compute_jobs
        with self._c._write() as conn:
            for job, verdicts in changed:
                summary = "; ".join(f"{v.template}: {v.verdict}" for v in verdicts)
                res = conn.execute(
                    update(j)
                    .where(j.c.id == job.id, j.c.state == "queued")
                    .values(placement=json.dumps([v.as_dict() for v in verdicts]))
                )
                if res.rowcount == 1:
                    self._event(
                        conn, job.id, now, "waiting", f"no template has room ({summary})", 0
                    )

    def _missing_input(
        self, inputs: Sequence[InputSpec], known: dict[tuple[str, str], bool] | None = None
    ) -> str | None:
        """Why the job cannot run (an input commit is no longer in the catalog), or None.
        ``known``: (dataset, commit) -> whether it exists, learnt by the caller's earlier
        calls (this call adds to it)."""
        known = {} if known is None else known
        for spec in inputs:
            key = (spec.dataset, spec.commit_id)
            if key in known:
                if not known[key]:
                    return self._gone(spec)
                continue
            with self._c._read() as conn:
                commits = t.commits.join(t.datasets, t.datasets.c.id == t.commits.c.dataset_id)
                found = conn.scalar(
                    select(func.count())
                    .select_from(commits)
                    .where(t.datasets.c.name == spec.dataset, t.commits.c.id == spec.commit_id)
                )
            known[key] = bool(found)
            if not found:
                return self._gone(spec)
        return None

    @staticmethod
    def _gone(spec: InputSpec) -> str:
        return (
            f"input {spec.name}: commit {spec.commit_id[:12]} of dataset "
            f"{spec.dataset!r} (was {spec.dataset}@{spec.ref}) no longer exists; "
            "it was deleted while the job was queued"
        )

    def _fail_queued(self, job_id: int, reason: str, now: datetime) -> bool:
        j = ct.compute_jobs
        with self._c._write() as conn:
            res = conn.execute(
                update(j)
                .where(j.c.id == job_id, j.c.state == "queued")
                .values(state="failed", reason=reason, updated_at=now)
            )
            if res.rowcount != 1:
                return False
            self._event(conn, job_id, now, "failed", reason, 0)
        return True

    # -- the presence of job runners (is a site's agent up?) ------------------------------

    def runner_seen(self, worker: str, site: str, *, now: datetime) -> None:
        """Job runner ``worker`` at ``site`` is alive (each pass of a runner says so)."""
        r = ct.compute_runners
        with self._c._write() as conn:
            res = conn.execute(update(r).where(r.c.worker == worker).values(site=site, seen_at=now))
            if res.rowcount == 0:
                try:
                    with conn.begin_nested():
                        conn.execute(r.insert().values(worker=worker, site=site, seen_at=now))
                except sa_exc.IntegrityError:
                    pass  # the same runner's other thread inserted it a moment ago

    def runners_seen(self) -> dict[str, datetime]:
        """When a job runner was last seen at each site (sites never seen are absent)."""
        r = ct.compute_runners
        with self._c._read() as conn:
            rows = conn.execute(select(r.c.site, func.max(r.c.seen_at)).group_by(r.c.site)).all()
        return {site: at for site, at in rows}

    def sites_with_runner(self, *, now: datetime) -> set[str]:
        """Sites whose agent ran a job pass within :data:`RUNNER_SEEN_WITHIN`."""
        return {s for s, at in self.runners_seen().items() if now - at <= RUNNER_SEEN_WITHIN}

    def strand_check(self, *, now: datetime) -> list[int]:
        """Placed jobs waiting at a site whose agent is down (none seen for
        :data:`RUNNER_SEEN_WITHIN`, placed at least that long ago): a job of a queue that
        moves on goes back to the queue (admitted again elsewhere, this site marked
        ``no agent``); one of a queue that waits says so in its timeline, once.
        Returns the ids of the jobs moved back."""
        j = ct.compute_jobs
        # Every pass of every agent runs this: one light query, and nothing more unless a
        # job has been placed for longer than an agent may stay silent.
        with self._c._read() as conn:
            ids = conn.scalars(
                select(j.c.id).where(
                    j.c.state == "placed", j.c.updated_at < now - RUNNER_SEEN_WITHIN
                )
            ).all()
        if not ids:
            return []
        seen_at = self.runners_seen()
        live = {s for s, at in seen_at.items() if now - at <= RUNNER_SEEN_WITHIN}
        moved = []
        for job_id in ids:
            job = self.get_job(int(job_id))
            if job.state != "placed" or job.site is None or job.site in live:
                continue
            queue = self.get_queue(job.queue)
            seen = seen_at.get(job.site)
            since = "never seen" if seen is None else f"last seen {seen:%Y-%m-%d %H:%M:%S} UTC"
            if queue.agent_down == "move":
                with self._c._write() as conn:
                    res = conn.execute(
                        update(j)
                        .where(j.c.id == job.id, j.c.state == "placed", j.c.attempt == job.attempt)
                        .values(state="queued", template_id=None, compute_id=None, updated_at=now)
                    )
                    if res.rowcount == 1:
                        self._event(
                            conn,
                            job.id,
                            now,
                            "requeued",
                            f"no agent at {job.site} ({since}): moving on, by queue "
                            f"{queue.name}'s policy",
                            job.attempt,
                        )
                        moved.append(job.id)
                        ring(self._c)
                continue
            events = self.timeline(job.id)
            if events and events[-1].kind == "waiting for agent":
                continue
            with self._c._write() as conn:
                self._event(
                    conn,
                    job.id,
                    now,
                    "waiting for agent",
                    f"no agent at {job.site} ({since}): the job waits for it, by queue "
                    f"{queue.name}'s policy; start one with `lakecache agent --site {job.site}`",
                    job.attempt,
                )
        return moved

    def schedule(
        self, *, now: datetime, limit: int = 1000, budget: float | None = None, checks: bool = True
    ) -> int:
        """One scheduler pass: fail queued jobs past their deadline, move or mark jobs
        placed at a site whose agent is down, then admit the queued oldest first. Safe to
        run in any number of processes at once. Returns jobs placed.

        ``budget``: seconds after which the pass stops admitting (the rest wait for the
        next pass). A runner passes one: while slots keep freeing elsewhere, an unbounded
        pass went on admitting for tens of seconds while the jobs placed at its own site
        waited for it to end to be started.

        ``checks``: False leaves out the deadlines and the agents down (a caller that runs
        passes many times a second makes those checks at most every second)."""
        stop_at = None if budget is None else time.monotonic() + budget
        if checks:
            self.fail_overdue(now=now)
            self.strand_check(now=now)
        j = ct.compute_jobs
        # Every pass of every agent reads the queued jobs' ids, then admits them in batches
        # (one snapshot, one plan and one transaction each); a job of a shape that found
        # no room in an earlier batch of this pass is passed over.
        # Their shapes come with the ids (raw columns, nothing decoded): a batch is made of
        # jobs whose shape has not yet found no room, so that 1,000 jobs alike waiting for
        # 8 slots cost one batch a pass, not five that each read and skip 200 rows.
        with self._c._read() as conn:
            rest = [
                (int(r["id"]), _shape(r))
                for r in conn.execute(
                    select(j.c.id, *_SHAPE_COLUMNS)
                    .where(j.c.state == "queued")
                    .order_by(j.c.id)
                    .limit(limit)
                ).mappings()
            ]
        placed = 0
        full: set[tuple[object, ...]] = set()
        while rest:
            if stop_at is not None and time.monotonic() > stop_at:
                break
            if full:
                rest = [(i, shape) for i, shape in rest if shape not in full]
            batch, rest = rest[:ADMIT_BATCH], rest[ADMIT_BATCH:]
            if not batch:
                break
            done, no_room = self._admit([i for i, _ in batch], now=now, full=full)
            placed += len(done)
            full |= no_room
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


class _Queued:
    """A queued job as admission reads it: its size and inputs decoded only when planned
    (a pass reads a batch of queued jobs, and passes over most when the slots are full)."""

    def __init__(self, r: Any) -> None:
        self.id = int(r["id"])
        self.queue_id = int(r["queue_id"])
        self.attempt = int(r["attempt"])
        #: Its placement explanation as stored (JSON), to write only a changed one.
        self.placement: str | None = r["placement"]
        #: Jobs of one shape fit, or do not, alike.
        self.shape = _shape(r)
        self._row = r

    @functools.cached_property
    def request(self) -> Resources:
        return size_of(self._row)

    @functools.cached_property
    def inputs(self) -> tuple[InputSpec, ...]:
        raw = self._row["inputs"]
        if not raw or raw == "[]":
            return ()
        return tuple(InputSpec.from_dict(d) for d in json.loads(raw))


#: The columns a queued job's shape is made of (see :func:`_shape`).
_SHAPE_COLUMNS = (
    ct.compute_jobs.c.queue_id,
    ct.compute_jobs.c.cpu_milli,
    ct.compute_jobs.c.memory,
    ct.compute_jobs.c.gpu,
    ct.compute_jobs.c.resources,
    ct.compute_jobs.c.inputs,
)


def _shape(r: Any) -> tuple[object, ...]:
    """A queued job's shape, from its raw columns (a row's mapping): jobs of one queue,
    size and inputs fit, or do not, alike."""
    return tuple(r[c.name] for c in _SHAPE_COLUMNS)
