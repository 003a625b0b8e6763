"""Flow runs and their tasks in the catalog: records, inserts and fenced transitions.

Every transition of a task is a compare-and-swap on its state (and job), so an
advancer that lost its lease, or a ``cancel`` racing an advance, can never move
a task twice. A run has one advancer at a time (:meth:`FlowStore.take_run`),
taken over when its lease lapses: a restarted server, or a ``--wait`` that was
interrupted, leaves a run that the next advancer picks up where it stood.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, or_, select, update

from lakecache.errors import NotFoundError
from lakecache.flows import tables as ft
from lakecache.flows.spec import Plan, PlannedTask

if TYPE_CHECKING:
    from lakecache.catalog.db import Catalog

FINAL_TASK_STATES = ("succeeded", "failed", "cancelled", "skipped")
#: The job environment variable that names the task attempt a job was submitted for.
JOB_KEY_ENV = "LAKECACHE_FLOW_JOB_KEY"
_KEY_PREFIX = "flow-run-"
#: Runs whose parsed task specs a store keeps (oldest dropped first).
SPEC_CACHE_RUNS = 32


def job_key(run_id: int, task_id: int, attempt: int) -> str:
    """The name of a task's ``attempt``-th job (counting from 0): the same for whoever
    submits it, so an advancer that finds a task announced but without its job can look
    the job up instead of submitting it twice."""
    return f"{_KEY_PREFIX}{run_id}-task-{task_id}-job-{attempt}"


@dataclass(frozen=True)
class FlowRunRecord:
    """A run of a flow, and how many of its tasks are in each state."""

    id: int
    flow: str
    state: str
    params: Mapping[str, Any]
    code_version: str
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    reason: str | None
    counts: Mapping[str, int]

    @property
    def done(self) -> bool:
        return self.state != "running"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "flow": self.flow,
            "state": self.state,
            "params": dict(self.params),
            "code_version": self.code_version,
            "submitted_by": self.submitted_by,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "reason": self.reason,
            "counts": dict(self.counts),
        }


@dataclass(frozen=True)
class FlowTaskRecord:
    """One task instance of a run, with the job it runs as and what it produced."""

    id: int
    run_id: int
    name: str
    task: str
    position: int
    state: str
    spec: PlannedTask
    job_id: int | None
    jobs: tuple[int, ...]
    tries: int
    started_at: datetime | None
    ended_at: datetime | None
    reason: str | None
    timed_out: bool
    input_commits: Mapping[str, Any]
    output_dataset: str | None
    output_commit: str | None
    output_commits: Mapping[str, Any]
    memo_key: str | None
    reused_from: int | None

    @property
    def done(self) -> bool:
        return self.state in FINAL_TASK_STATES

    @property
    def seconds(self) -> float | None:
        if self.started_at is None:
            return None
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "task": self.task,
            "state": self.state,
            "deps": list(self.spec.deps),
            "params": dict(self.spec.params),
            "command": list(self.spec.command),
            "queue": self.spec.queue,
            "job_id": self.job_id,
            "jobs": list(self.jobs),
            "tries": self.tries,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "seconds": self.seconds,
            "reason": self.reason,
            "inputs": dict(self.input_commits),
            "output_dataset": self.output_dataset,
            "output_commit": self.output_commit,
            "outputs": dict(self.output_commits),
            "memo": self.spec.memo,
            "reused_from": self.reused_from,
        }


@dataclass(frozen=True)
class TaskMove:
    """One transition of :meth:`FlowStore.move_many`: set ``values`` on ``task`` if it is
    still in one of the ``expect`` states (and, with ``check_job``, on its job)."""

    task: FlowTaskRecord
    expect: tuple[str, ...]
    values: Mapping[str, Any]
    check_job: bool = True


class FlowStore:
    """Queries and transitions of flow runs. Safe to share between threads."""

    def __init__(self, catalog: Catalog) -> None:
        self._c = catalog
        #: run id -> task id -> its planned spec, parsed once (a plan never changes).
        self._specs: dict[int, dict[int, PlannedTask]] = {}

    # -- runs ------------------------------------------------------------------------------

    def create_run(
        self,
        plan: Plan,
        *,
        source: str,
        code_version: str,
        submitted_by: str,
        now: datetime,
    ) -> int:
        """Record a run and all its tasks (pending), in one transaction."""
        with self._c._write() as conn:
            res = conn.execute(
                ft.flow_runs.insert().values(
                    flow=plan.flow,
                    state="running",
                    source=source,
                    params=json.dumps(dict(plan.params)),
                    code_version=code_version,
                    submitted_by=submitted_by,
                    created_at=now,
                    updated_at=now,
                )
            )
            (run_id,) = res.inserted_primary_key or (0,)
            rows = [
                {
                    "run_id": run_id,
                    "name": t.name,
                    "task": t.task,
                    "position": pos,
                    "state": "pending",
                    "spec": json.dumps(t.as_dict(), separators=(",", ":")),
                    "jobs": "[]",
                    "tries": 0,
                    "timed_out": False,
                }
                for pos, t in enumerate(plan.tasks)
            ]
            for start in range(0, len(rows), 1000):
                conn.execute(ft.flow_tasks.insert(), rows[start : start + 1000])
        return int(run_id)

    def _run(self, r: Any, counts: Mapping[str, int]) -> FlowRunRecord:
        return FlowRunRecord(
            id=int(r["id"]),
            flow=r["flow"],
            state=r["state"],
            params=json.loads(r["params"]),
            code_version=r["code_version"],
            submitted_by=r["submitted_by"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            ended_at=r["ended_at"],
            reason=r["reason"],
            counts=counts,
        )

    def _counts(self, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        t = ft.flow_tasks
        out: dict[int, dict[str, int]] = {i: {} for i in run_ids}
        if not run_ids:
            return out
        with self._c._read() as conn:
            for run_id, state, n in conn.execute(
                select(t.c.run_id, t.c.state, func.count())
                .where(t.c.run_id.in_(list(run_ids)))
                .group_by(t.c.run_id, t.c.state)
            ):
                out[int(run_id)][state] = int(n)
        return out

    def get_run(self, run_id: int) -> FlowRunRecord:
        """The run; NotFoundError with a hint if there is none."""
        with self._c._read() as conn:
            row = (
                conn.execute(select(ft.flow_runs).where(ft.flow_runs.c.id == run_id))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise NotFoundError(f"no flow run {run_id}", hint="List runs with `lakecache flow ls`.")
        return self._run(row, self._counts([run_id])[run_id])

    def run_source(self, run_id: int) -> str:
        with self._c._read() as conn:
            src = conn.scalar(select(ft.flow_runs.c.source).where(ft.flow_runs.c.id == run_id))
        if src is None:
            raise NotFoundError(f"no flow run {run_id}", hint="List runs with `lakecache flow ls`.")
        return str(src)

    def list_runs(
        self,
        *,
        states: Sequence[str] | None = None,
        flow: str | None = None,
        submitted_by: str | None = None,
        limit: int = 100,
    ) -> list[FlowRunRecord]:
        """Runs, newest first."""
        r = ft.flow_runs
        q = select(r).order_by(r.c.id.desc()).limit(limit)
        if states:
            q = q.where(r.c.state.in_(list(states)))
        if flow:
            q = q.where(r.c.flow == flow)
        if submitted_by:
            q = q.where(r.c.submitted_by == submitted_by)
        with self._c._read() as conn:
            rows = conn.execute(q).mappings().all()
        counts = self._counts([int(x["id"]) for x in rows])
        return [self._run(x, counts[int(x["id"])]) for x in rows]

    def take_run(self, run_id: int, owner: str, *, now: datetime, lease: timedelta) -> bool:
        """Become (or stay) the run's one advancer until ``now + lease``; False if another
        advancer holds a lease that has not lapsed, or the run has ended."""
        r = ft.flow_runs
        with self._c._write() as conn:
            res = conn.execute(
                update(r)
                .where(
                    r.c.id == run_id,
                    r.c.state == "running",
                    or_(r.c.owner.is_(None), r.c.owner == owner, r.c.owner_until < now),
                )
                .values(owner=owner, owner_until=now + lease)
            )
        return res.rowcount == 1

    def release_run(self, run_id: int, owner: str, *, changed: bool) -> None:
        """Give up the hold on the run taken by :meth:`take_run` (if still held); with
        ``changed``, note that its tasks moved (its ``updated_at``)."""
        r = ft.flow_runs
        values: dict[str, Any] = {"owner": None, "owner_until": None}
        if changed:
            values["updated_at"] = datetime.now(UTC)
        with self._c._write() as conn:
            conn.execute(update(r).where(r.c.id == run_id, r.c.owner == owner).values(**values))

    def end_run(self, run_id: int, state: str, reason: str | None, *, now: datetime) -> bool:
        r = ft.flow_runs
        with self._c._write() as conn:
            res = conn.execute(
                update(r)
                .where(r.c.id == run_id, r.c.state == "running")
                .values(state=state, reason=reason, ended_at=now, updated_at=now, owner=None)
            )
        return res.rowcount == 1

    def reopen_run(self, run_id: int, *, now: datetime) -> bool:
        """An ended run runs again (``resume``); False if it is still running."""
        r = ft.flow_runs
        with self._c._write() as conn:
            res = conn.execute(
                update(r)
                .where(r.c.id == run_id, r.c.state != "running")
                .values(state="running", reason=None, ended_at=None, updated_at=now, owner=None)
            )
        return res.rowcount == 1

    def running_runs(self) -> list[int]:
        with self._c._read() as conn:
            return [
                int(x)
                for x in conn.scalars(
                    select(ft.flow_runs.c.id).where(ft.flow_runs.c.state == "running")
                )
            ]

    # -- tasks -----------------------------------------------------------------------------

    def tasks(self, run_id: int) -> list[FlowTaskRecord]:
        """The run's tasks in plan order (deps first)."""
        t = ft.flow_tasks
        cols = [c for c in t.c if c.name != "spec"]
        specs = self._specs.get(run_id)
        with self._c._read() as conn:
            if specs is None:
                specs = {
                    int(i): PlannedTask.from_dict(json.loads(s))
                    for i, s in conn.execute(select(t.c.id, t.c.spec).where(t.c.run_id == run_id))
                }
                if specs:
                    while len(self._specs) >= SPEC_CACHE_RUNS:  # a server lives long
                        self._specs.pop(next(iter(self._specs)))
                    self._specs[run_id] = specs
            rows = conn.execute(
                select(*cols).where(t.c.run_id == run_id).order_by(t.c.position)
            ).mappings()
            return [self._task(r, specs[int(r["id"])]) for r in rows]

    def get_task(self, task_id: int) -> FlowTaskRecord:
        t = ft.flow_tasks
        with self._c._read() as conn:
            row = conn.execute(select(t).where(t.c.id == task_id)).mappings().one_or_none()
        if row is None:
            raise NotFoundError(f"no flow task {task_id}")
        return self._task(row, PlannedTask.from_dict(json.loads(row["spec"])))

    @staticmethod
    def _task(r: Any, spec: PlannedTask) -> FlowTaskRecord:
        return FlowTaskRecord(
            id=int(r["id"]),
            run_id=int(r["run_id"]),
            name=r["name"],
            task=r["task"],
            position=int(r["position"]),
            state=r["state"],
            spec=spec,
            job_id=None if r["job_id"] is None else int(r["job_id"]),
            jobs=tuple(json.loads(r["jobs"])),
            tries=int(r["tries"]),
            started_at=r["started_at"],
            ended_at=r["ended_at"],
            reason=r["reason"],
            timed_out=bool(r["timed_out"]),
            input_commits=json.loads(r["input_commits"] or "{}"),
            output_dataset=r["output_dataset"],
            output_commit=r["output_commit"],
            output_commits=json.loads(r["output_commits"] or "{}"),
            memo_key=r["memo_key"],
            reused_from=None if r["reused_from"] is None else int(r["reused_from"]),
        )

    def move(
        self, task: FlowTaskRecord, expect: Iterable[str], *, check_job: bool = True, **values: Any
    ) -> FlowTaskRecord | None:
        """Set ``values`` on the task if it is still in one of ``expect`` and (``check_job``)
        still on the job ``task`` was read with; the task as it is then, or None (moved
        by someone else meanwhile: read it again)."""
        return self.move_many([TaskMove(task, tuple(expect), values, check_job)])[0]

    def move_many(self, moves: Sequence[TaskMove]) -> list[FlowTaskRecord | None]:
        """:meth:`move` for many tasks in one transaction (a pass's dispatch): each is its
        own compare-and-swap, so each result is the task as it is then, or None.

        Moves of one shape are one statement run once over all their parameters (the
        driver's executemany): building and running a statement per task cost more than
        the updates. When fewer rows changed than were asked (a cancel got there first),
        the rows are read back in the same transaction to learn which did."""
        t = ft.flow_tasks
        groups: dict[tuple[Any, ...], tuple[Any, list[int], list[dict[str, Any]]]] = {}
        for index, m in enumerate(moves):
            on_job = None if not m.check_job else m.task.job_id is None
            shape = (m.expect, on_job, tuple(sorted(m.values)))
            if shape not in groups:
                state = t.c.state == m.expect[0] if len(m.expect) == 1 else t.c.state.in_(m.expect)
                q = update(t).where(t.c.id == bindparam("_id"), state)
                if on_job is not None:
                    q = q.where(t.c.job_id.is_(None) if on_job else t.c.job_id == bindparam("_job"))
                groups[shape] = (q.values({k: bindparam(f"_v_{k}") for k in m.values}), [], [])
            _, indexes, params = groups[shape]
            row: dict[str, Any] = {"_id": m.task.id}
            if on_job is False:
                row["_job"] = m.task.job_id
            for key, value in m.values.items():
                if key in ("input_commits", "output_commits") and not isinstance(value, str | None):
                    value = json.dumps(value)
                elif key == "jobs":
                    value = json.dumps(list(value))
                row[f"_v_{key}"] = value
            indexes.append(index)
            params.append(row)
        done = [False] * len(moves)
        with self._c._write() as conn:
            for q, indexes, params in groups.values():
                if len(params) == 1 or not conn.dialect.supports_sane_multi_rowcount:
                    for index, row in zip(indexes, params, strict=True):
                        done[index] = conn.execute(q, row).rowcount == 1
                elif conn.execute(q, params).rowcount == len(params):
                    for index in indexes:
                        done[index] = True
                else:
                    for index, ok in zip(indexes, self._landed(conn, params), strict=True):
                        done[index] = ok
        out: list[FlowTaskRecord | None] = []
        for m, ok in zip(moves, done, strict=True):
            if not ok:
                out.append(None)
                continue
            record = dict(m.values)
            if "jobs" in record:
                record["jobs"] = tuple(record["jobs"])
            for key in ("input_commits", "output_commits"):
                if key in record and record[key] is None:
                    record[key] = {}
            out.append(replace(m.task, **record))
        return out

    @staticmethod
    def _landed(conn: Any, params: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Which of a batch of moves changed their row: those whose row now holds the
        state, job, jobs and tries the move set (read inside the moving transaction)."""
        t = ft.flow_tasks
        checked = ("state", "job_id", "jobs", "tries")
        ids = [int(p["_id"]) for p in params]
        rows: dict[int, Any] = {}
        for start in range(0, len(ids), 500):
            query = select(t.c.id, *(t.c[c] for c in checked)).where(
                t.c.id.in_(ids[start : start + 500])
            )
            rows.update({int(r.id): r for r in conn.execute(query)})
        return [
            all(getattr(rows[int(p["_id"])], c) == p[f"_v_{c}"] for c in checked if f"_v_{c}" in p)
            for p in params
        ]

    def jobs_by_key(self, run: FlowRunRecord, keys: Iterable[str]) -> dict[str, int]:
        """The jobs already submitted under these keys (:func:`job_key`) for run ``run``,
        oldest first if a key was used twice. Reads the run's jobs by a text match on
        their environment: a scan, which only the rare recovery of a dispatch cut short
        pays (see :meth:`~lakecache.flows.engine.FlowEngine.advance`)."""
        from lakecache.compute import tables as ct

        wanted = set(keys)
        if not wanted:
            return {}
        j = ct.compute_jobs
        # Jobs are made after their run; a day of margin covers clocks of other machines.
        since = run.created_at - timedelta(days=1)
        found: dict[str, int] = {}
        with self._c._read() as conn:
            rows = conn.execute(
                select(j.c.id, j.c.env)
                .where(
                    j.c.created_at >= since,
                    # The run's own jobs only: keys are predictable, and anyone may set an
                    # environment variable on a job of theirs.
                    j.c.submitted_by == run.submitted_by,
                    j.c.env.like(f'%"{_KEY_PREFIX}{run.id}-task-%'),
                )
                .order_by(j.c.id)
            )
            for job_id, env in rows:
                key = json.loads(env).get(JOB_KEY_ENV)
                if key in wanted and key not in found:
                    found[key] = int(job_id)
        return found

    def job_states(self, job_ids: Sequence[int]) -> dict[int, Mapping[str, Any]]:
        """state, exit code, reason, workdir, updated_at of each job, in few queries."""
        from lakecache.compute import tables as ct

        j = ct.compute_jobs
        out: dict[int, Mapping[str, Any]] = {}
        ids = list(job_ids)
        with self._c._read() as conn:
            for start in range(0, len(ids), 500):
                for r in conn.execute(
                    select(
                        j.c.id, j.c.state, j.c.exit_code, j.c.reason, j.c.workdir, j.c.updated_at
                    ).where(j.c.id.in_(ids[start : start + 500]))
                ).mappings():
                    out[int(r["id"])] = dict(r)
        return out

    def memo_hit(self, key: str) -> FlowTaskRecord | None:
        """The latest succeeded task (of any run) with this memo key, not itself a reuse."""
        t = ft.flow_tasks
        with self._c._read() as conn:
            row = (
                conn.execute(
                    select(t)
                    .where(t.c.memo_key == key, t.c.state == "succeeded")
                    .order_by(t.c.id.desc())
                    .limit(1)
                )
                .mappings()
                .one_or_none()
            )
        if row is None:
            return None
        return self._task(row, PlannedTask.from_dict(json.loads(row["spec"])))

    def produced(self, dataset: str, commit_id: str) -> FlowTaskRecord | None:
        """Lineage: the flow task whose output became ``dataset@commit_id``, if one did."""
        t = ft.flow_tasks
        like = f'%"{commit_id}"%'
        with self._c._read() as conn:
            rows = (
                conn.execute(
                    select(t)
                    .where(
                        t.c.state == "succeeded",
                        or_(
                            (t.c.output_dataset == dataset) & (t.c.output_commit == commit_id),
                            t.c.output_commits.like(like),
                        ),
                    )
                    .order_by(t.c.id)
                )
                .mappings()
                .all()
            )
        for row in rows:
            rec = self._task(row, PlannedTask.from_dict(json.loads(row["spec"])))
            if rec.output_dataset == dataset and rec.output_commit == commit_id:
                return rec
            if any(v == [dataset, commit_id] for v in rec.output_commits.values()):
                return rec
        return None
