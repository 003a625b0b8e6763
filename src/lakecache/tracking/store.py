"""Tracking in the catalog: experiments, runs, and what each run logged.

Reached as ``TrackingStore(catalog)``; safe to share between threads. The
dashboard pages and the server's routes read through it; the SDK writes
through it directly, or through the server which calls it.

Writes come in batches (:meth:`log_batch`): one transaction per batch, the
points of each key packed into one row (:mod:`lakecache.tracking.points`),
and the latest point per key kept up to date in the same transaction, so
sorting the runs table by a metric never reads the points.

Concurrency: batches of one run may come from several threads or processes
(the job's SDK and its runner's sampler): each is its own transaction; the
latest-point upsert only moves forward (a higher step, or the same step at a
later time), so the order batches land in does not matter.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, delete, exists, func, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from lakecache.catalog.db import Catalog
from lakecache.errors import AlreadyExistsError, NotFoundError, UserError
from lakecache.tracking import points
from lakecache.tracking import tables as tt
from lakecache.tracking.model import (
    ArtifactRecord,
    Batch,
    Columns,
    ExperimentRecord,
    InputRecord,
    MetricPoint,
    RunFilter,
    RunPage,
    RunRecord,
    RunSummary,
    Series,
    check_key,
    check_status,
    encode_value,
)

#: The shared experiment of runs started without one (MLflow's experiment "0").
DEFAULT_EXPERIMENT = "Default"
#: The shared experiment of job runs that name none.
JOBS_EXPERIMENT = "jobs"
_EXPERIMENT_HINT = "List experiments with `lakecache experiment ls`."
#: A chunk of fewer points than this takes the next small batch of its key appended.
MERGE_BELOW = 512
_ORDERS = ("start_time", "end_time", "name", "status", "user", "id")


def now() -> datetime:
    return datetime.now(UTC)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _db_value(value: float) -> float | None:
    return None if math.isnan(value) else value


def check_experiment_name(name: str) -> str:
    name = check_key("experiment", name)
    if len(name) > 255 or not name.strip():
        raise UserError(f"invalid experiment name {name!r}", hint="Use 1 to 255 characters.")
    return name


class TrackingStore:
    """Queries and writes of tracking. Safe to share between threads."""

    def __init__(self, catalog: Catalog) -> None:
        self._c = catalog

    # -- experiments ---------------------------------------------------------------------

    def create_experiment(self, name: str, owner: str) -> ExperimentRecord:
        """A new experiment; AlreadyExistsError if the name is taken."""
        name = check_experiment_name(name)
        created = now()
        try:
            with self._c._write() as conn:
                res = conn.execute(
                    tt.tracking_experiments.insert().values(
                        name=name, owner=owner, created_at=created
                    )
                )
                (exp_id,) = res.inserted_primary_key or (None,)
        except sa_exc.IntegrityError:
            raise AlreadyExistsError(
                f"experiment {name!r} already exists", hint="Choose another name, or log into it."
            ) from None
        assert exp_id is not None
        return ExperimentRecord(int(exp_id), name, owner, created)

    def get_or_create_experiment(self, name: str, owner: str = "") -> ExperimentRecord:
        """The experiment called ``name``, made (owned by ``owner``) if missing. Race-safe."""
        name = check_experiment_name(name)
        with self._c._write() as conn:
            conn.execute(
                self._c._insert_ignore(tt.tracking_experiments).values(
                    name=name, owner=owner, created_at=now()
                )
            )
        return self.get_experiment(name)

    def get_experiment(self, name_or_id: str | int) -> ExperimentRecord:
        """By name, or by id (an int, or digits: MLflow's ids are text). NotFoundError."""
        e = tt.tracking_experiments
        if isinstance(name_or_id, int) or (
            isinstance(name_or_id, str) and name_or_id.isdigit() and len(name_or_id) < 19
        ):
            where = e.c.id == int(name_or_id)
        else:
            where = e.c.name == name_or_id
        with self._c._read() as conn:
            row = conn.execute(select(e).where(where)).one_or_none()
            if row is None:
                raise NotFoundError(f"no experiment {name_or_id!r}", hint=_EXPERIMENT_HINT)
            count = conn.scalar(
                select(func.count()).where(tt.tracking_runs.c.experiment_id == row.id)
            )
        return ExperimentRecord(int(row.id), row.name, row.owner, row.created_at, int(count or 0))

    def list_experiments(self, visible_to: str | None = None) -> list[ExperimentRecord]:
        """Every experiment by name, with its run count. ``visible_to``: only those that
        user may see (shared ones, their own, and those holding a run of theirs)."""
        e, r = tt.tracking_experiments, tt.tracking_runs
        counts = (
            select(r.c.experiment_id, func.count().label("n"))
            .group_by(r.c.experiment_id)
            .subquery()
        )
        query = (
            select(e, func.coalesce(counts.c.n, 0).label("n"))
            .select_from(e.outerjoin(counts, counts.c.experiment_id == e.c.id))
            .order_by(e.c.name)
        )
        if visible_to is not None:
            mine = select(r.c.experiment_id).where(r.c.user_name == visible_to)
            query = query.where(or_(e.c.owner == "", e.c.owner == visible_to, e.c.id.in_(mine)))
        with self._c._read() as conn:
            rows = conn.execute(query).all()
        return [ExperimentRecord(int(x.id), x.name, x.owner, x.created_at, int(x.n)) for x in rows]

    def delete_experiment(self, name: str) -> None:
        """Remove an experiment and all its runs (their points too)."""
        exp = self.get_experiment(name)
        with self._c._write() as conn:
            ids = list(
                conn.scalars(
                    select(tt.tracking_runs.c.id).where(tt.tracking_runs.c.experiment_id == exp.id)
                )
            )
            self._delete_points(conn, ids)
            conn.execute(
                delete(tt.tracking_experiments).where(tt.tracking_experiments.c.id == exp.id)
            )

    # -- runs ----------------------------------------------------------------------------

    def create_run(
        self,
        experiment: str,
        *,
        user: str,
        name: str | None = None,
        command: Sequence[str] = (),
        env: Mapping[str, Any] | None = None,
        code: Mapping[str, Any] | None = None,
        job_id: int | None = None,
        job_attempt: int | None = None,
        flow_run: str | None = None,
        flow_task: str | None = None,
        started_at: datetime | None = None,
        experiment_owner: str = "",
    ) -> RunRecord:
        """Start a run in ``experiment`` (made, shared or owned by ``experiment_owner``,
        if missing). Its name defaults to ``run-<id>``."""
        exp = self.get_or_create_experiment(experiment, experiment_owner)
        if name is not None:
            name = check_key("run", name)
        started = started_at or now()
        with self._c._write() as conn:
            res = conn.execute(
                tt.tracking_runs.insert().values(
                    experiment_id=exp.id,
                    name=name or "",
                    user_name=user,
                    status="running",
                    started_at=started,
                    command=json.dumps(list(command)),
                    env=json.dumps(dict(env or {})),
                    code=json.dumps(dict(code or {})),
                    job_id=job_id,
                    job_attempt=job_attempt,
                    flow_run=flow_run,
                    flow_task=flow_task,
                )
            )
            (run_id,) = res.inserted_primary_key or (None,)
            if not name:
                conn.execute(
                    update(tt.tracking_runs)
                    .where(tt.tracking_runs.c.id == run_id)
                    .values(name=f"run-{run_id}")
                )
        assert run_id is not None
        return self.get_run(int(run_id))

    def get_run(self, run_id: int) -> RunRecord:
        """The run with this id, or NotFoundError."""
        with self._c._read() as conn:
            row = conn.execute(_run_query().where(tt.tracking_runs.c.id == run_id)).one_or_none()
        if row is None:
            raise NotFoundError(f"no run {run_id}", hint="List runs with `lakecache run ls`.")
        return _run_record(row)

    def get_runs(self, run_ids: Sequence[int]) -> list[RunRecord]:
        """The runs with these ids that exist, in the order given (one query)."""
        ids = list(dict.fromkeys(int(i) for i in run_ids))
        found: dict[int, RunRecord] = {}
        with self._c._read() as conn:
            for start in range(0, len(ids), 500):
                query = _run_query().where(tt.tracking_runs.c.id.in_(ids[start : start + 500]))
                found.update({int(r.id): _run_record(r) for r in conn.execute(query)})
        return [found[i] for i in ids if i in found]

    def params_and_latest(
        self, run_ids: Sequence[int]
    ) -> tuple[dict[int, dict[str, str]], dict[int, dict[str, float]]]:
        """Each run's params and latest metric values (NaN for NaN), in two queries."""
        ids = [int(i) for i in run_ids]
        with self._c._read() as conn:
            return self._params_of(conn, ids, None), self._latest_of(conn, ids, None)

    def update_run(
        self,
        run_id: int,
        *,
        name: str | None = None,
        command: Sequence[str] | None = None,
        env: Mapping[str, Any] | None = None,
        code: Mapping[str, Any] | None = None,
    ) -> None:
        """Fill in what was learnt after the start (the job's own view of its code)."""
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = check_key("run", name)
        if command is not None:
            values["command"] = json.dumps(list(command))
        if env is not None:
            values["env"] = json.dumps(dict(env))
        if code is not None:
            values["code"] = json.dumps(dict(code))
        if values:
            with self._c._write() as conn:
                self._require_run(conn, run_id)
                conn.execute(
                    update(tt.tracking_runs).where(tt.tracking_runs.c.id == run_id).values(**values)
                )

    def end_run(
        self,
        run_id: int,
        status: str = "finished",
        *,
        exit_code: int | None = None,
        ended_at: datetime | None = None,
    ) -> None:
        """Record how the run ended (again: the last word wins, e.g. the runner's exit code)."""
        status = check_status(status)
        values: dict[str, Any] = {"status": status, "ended_at": ended_at or now()}
        if status == "running":
            values["ended_at"] = None
        if exit_code is not None:
            values["exit_code"] = exit_code
        with self._c._write() as conn:
            self._require_run(conn, run_id)
            conn.execute(
                update(tt.tracking_runs).where(tt.tracking_runs.c.id == run_id).values(**values)
            )

    def delete_run(self, run_id: int) -> None:
        with self._c._write() as conn:
            self._require_run(conn, run_id)
            self._delete_points(conn, [run_id])
            conn.execute(delete(tt.tracking_runs).where(tt.tracking_runs.c.id == run_id))

    def runs_of_job(self, job_id: int) -> list[RunRecord]:
        """The runs of a job's attempts, oldest first."""
        with self._c._read() as conn:
            rows = conn.execute(
                _run_query()
                .where(tt.tracking_runs.c.job_id == job_id)
                .order_by(tt.tracking_runs.c.id)
            ).all()
        return [_run_record(r) for r in rows]

    def list_runs(
        self,
        experiment: str | None = None,
        *,
        visible_to: str | None = None,
        order_by: str = "start_time",
        descending: bool = True,
        filters: Iterable[RunFilter] = (),
        limit: int = 50,
        offset: int = 0,
        params: Sequence[str] | None = None,
        metrics: Sequence[str] | None = None,
        flow_run: str | None = None,
        job_id: int | None = None,
    ) -> RunPage:
        """A page of runs, sorted and filtered by any field, param or latest metric.

        ``order_by``: ``start_time`` (default), ``end_time``, ``name``, ``status``,
        ``user``, ``id``, ``param:KEY`` or ``metric:KEY`` (runs without it last).
        ``visible_to``: only runs that user may see (their own, and all of the
        experiments they own). ``params``/``metrics``: the columns to return
        (None: all). One query for the page and its total, one for its columns.
        """
        r, e = tt.tracking_runs, tt.tracking_experiments
        if limit < 1 or limit > 10_000 or offset < 0:
            raise UserError(
                "limit must be 1 to 10000 and offset not negative",
                hint="Ask for a page of at most 10000 runs.",
            )
        query = _run_query()
        where: list[ColumnElement[bool]] = []
        if experiment is not None:
            where.append(r.c.experiment_id == self.get_experiment(experiment).id)
        if visible_to is not None:
            where.append(or_(r.c.user_name == visible_to, e.c.owner == visible_to))
        if flow_run is not None:
            where.append(r.c.flow_run == flow_run)
        if job_id is not None:
            where.append(r.c.job_id == job_id)
        for f in filters:
            where.append(_filter_clause(f))
        sort: Any
        if order_by.startswith(("param:", "metric:")):
            kind, _, key = order_by.partition(":")
            table = tt.tracking_params if kind == "param" else tt.tracking_latest_metrics
            joined = table.alias("sort_by")
            query = query.outerjoin(
                joined, and_(joined.c.run_id == r.c.id, joined.c.key == check_key(kind, key))
            )
            sort = joined.c.value
        else:
            if order_by not in _ORDERS:
                raise UserError(
                    f"cannot sort runs by {order_by!r}",
                    hint=f"Sort by {', '.join(_ORDERS)}, param:KEY or metric:KEY.",
                )
            sort = {
                "start_time": r.c.started_at,
                "end_time": r.c.ended_at,
                "name": r.c.name,
                "status": r.c.status,
                "user": r.c.user_name,
                "id": r.c.id,
            }[order_by]
        ordered = sort.desc().nulls_last() if descending else sort.asc().nulls_last()
        query = query.where(*where)
        with self._c._read() as conn:
            total = conn.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = conn.execute(
                query.order_by(ordered, r.c.id.desc()).limit(limit).offset(offset)
            ).all()
            ids = [int(x.id) for x in rows]
            param_map = self._params_of(conn, ids, params)
            metric_map = self._latest_of(conn, ids, metrics)
        items = [
            RunSummary(_run_record(x), param_map.get(int(x.id), {}), metric_map.get(int(x.id), {}))
            for x in rows
        ]
        return RunPage(items, int(total))

    # -- what a run logs -----------------------------------------------------------------

    def log_batch(self, run_id: int, batch: Batch) -> None:
        """Store a batch in one transaction: params and tags (a key logged again takes
        the new value), metric and system points, and each metric's latest point."""
        with self._c._write() as conn:
            self._require_run(conn, run_id)
            for table, values in (
                (tt.tracking_params, batch.params),
                (tt.tracking_tags, batch.tags),
            ):
                if values:
                    conn.execute(
                        delete(table).where(table.c.run_id == run_id, table.c.key.in_(list(values)))
                    )
                    conn.execute(
                        table.insert(),
                        [{"run_id": run_id, "key": k, "value": v} for k, v in values.items()],
                    )
            if batch.metrics:
                self._insert_points(conn, tt.tracking_metrics, run_id, batch.metrics)
                self._upsert_latest(conn, run_id, batch.metrics)
            if batch.system:
                self._insert_points(conn, tt.tracking_system_metrics, run_id, batch.system)

    def run_params(self, run_id: int) -> dict[str, str]:
        with self._c._read() as conn:
            return self._params_of(conn, [run_id], None).get(run_id, {})

    def run_tags(self, run_id: int) -> dict[str, str]:
        t = tt.tracking_tags
        with self._c._read() as conn:
            rows = conn.execute(select(t.c.key, t.c.value).where(t.c.run_id == run_id)).all()
        return dict(sorted((x.key, x.value) for x in rows))

    def latest_metrics(self, run_id: int) -> dict[str, MetricPoint]:
        m = tt.tracking_latest_metrics
        with self._c._read() as conn:
            rows = conn.execute(select(m).where(m.c.run_id == run_id).order_by(m.c.key)).all()
        return {x.key: MetricPoint(x.key, _nan(x.value), int(x.step), int(x.ts)) for x in rows}

    def metric_keys(self, run_id: int, *, system: bool = False) -> list[str]:
        if not system:
            return list(self.latest_metrics(run_id))
        s = tt.tracking_system_metrics
        with self._c._read() as conn:
            return list(
                conn.scalars(
                    select(s.c.key).where(s.c.run_id == run_id).distinct().order_by(s.c.key)
                )
            )

    def system_metric_keys(self, run_id: int) -> list[str]:
        return self.metric_keys(run_id, system=True)

    def _chunks(self, run_id: int, key: str, system: bool) -> list[tuple[bytes, bytes, bytes]]:
        t = tt.tracking_system_metrics if system else tt.tracking_metrics
        with self._c._read() as conn:
            rows = conn.execute(
                select(t.c.steps, t.c.times, t.c.vals)
                .where(t.c.run_id == run_id, t.c.key == key)
                .order_by(t.c.first_step, t.c.id)
            ).all()
        return [(bytes(r.steps), bytes(r.times), bytes(r.vals)) for r in rows]

    def _series_arrays(
        self, run_id: int, key: str, system: bool
    ) -> tuple[list[int], list[int], list[float]]:
        return points.unpack(self._chunks(run_id, key, system))

    def iter_metric_points(
        self, run_id: int, key: str, *, system: bool = False
    ) -> Iterator[MetricPoint]:
        """Every point of a metric by step (then time): for CSV downloads."""
        steps, times, vals = self._series_arrays(run_id, key, system)
        for step, ts, value in zip(steps, times, vals, strict=True):
            yield MetricPoint(key, value, step, ts)

    def metric_series(
        self,
        run_id: int,
        key: str,
        *,
        buckets: int | None = 1000,
        system: bool = False,
        start: float | None = None,
        end: float | None = None,
        axis: str = "step",
    ) -> Series:
        """A metric for a plot: all points if there are at most ``buckets`` of them, else
        the first and last points and, between them, per bucket of steps its first step,
        mean, min and max (spikes stay visible; :func:`.points.downsample`).

        ``start``/``end``: only the points in that range of steps (``axis="step"``) or of
        epoch seconds (``axis="time"``), in as much detail as ``buckets`` allows: what a
        zoomed plot asks for."""
        within = None
        if start is not None or end is not None:
            if axis not in ("step", "time"):
                raise UserError(f"axis {axis!r} is not step or time", hint="Use step or time.")
            within = (
                -math.inf if start is None else start,
                math.inf if end is None else end,
                axis,
            )
        data = points.series(self._chunks(run_id, key, system), buckets, within)
        return Series(
            key,
            data.total,
            data.downsampled,
            data.steps,
            data.means,
            data.mins,
            data.maxs,
            data.times,
        )

    def metric_csv(self, run_id: int, key: str, *, system: bool = False) -> Iterator[bytes]:
        """Every point of a metric by step as CSV (``step,timestamp_ms,value``; NaN and
        infinities as in JSON: ``NaN``, ``Infinity``), in pieces of 10,000 lines."""
        yield b"step,timestamp_ms,value\n"
        steps, times, vals = self._series_arrays(run_id, key, system)
        for first in range(0, len(steps), 10_000):
            yield "".join(
                f"{s},{t},{encode_value(v)}\n"
                for s, t, v in zip(
                    steps[first : first + 10_000],
                    times[first : first + 10_000],
                    vals[first : first + 10_000],
                    strict=True,
                )
            ).encode()

    # -- datasets read, artifacts, logs ----------------------------------------------------

    def record_input(
        self,
        run_id: int,
        *,
        dataset: str,
        commit_id: str,
        source: str,
        hit: bool | None = None,
        fill_seconds: float | None = None,
        files: int = 0,
        nbytes: int = 0,
        reader: str = "",
        at: datetime | None = None,
    ) -> None:
        """Note that the run read ``dataset@commit_id`` (from a cache or streamed).
        The same commit read again by the same reader and source is recorded once."""
        i = tt.tracking_inputs
        with self._c._write() as conn:
            self._require_run(conn, run_id)
            seen = conn.scalar(
                select(func.count()).where(
                    i.c.run_id == run_id,
                    i.c.dataset == dataset,
                    i.c.commit_id == commit_id,
                    i.c.source == source,
                    i.c.reader == reader,
                )
            )
            if seen:
                return
            conn.execute(
                i.insert().values(
                    run_id=run_id,
                    dataset=dataset,
                    commit_id=commit_id,
                    source=source,
                    hit=hit,
                    fill_seconds=fill_seconds,
                    files=files,
                    bytes=nbytes,
                    reader=reader[:64],
                    at=at or now(),
                )
            )

    def run_inputs(self, run_id: int) -> list[InputRecord]:
        i = tt.tracking_inputs
        with self._c._read() as conn:
            rows = conn.execute(select(i).where(i.c.run_id == run_id).order_by(i.c.id)).all()
        return [
            InputRecord(
                x.dataset,
                x.commit_id,
                x.source,
                x.hit,
                x.fill_seconds,
                int(x.files),
                int(x.bytes),
                x.reader,
                x.at,
            )
            for x in rows
        ]

    def add_artifact(self, run_id: int, path: str, digest: str, size: int) -> ArtifactRecord:
        """Name the lake object ``digest`` as the run's artifact ``path`` (replacing one
        of that path). The bytes must already be in the lake (:mod:`.objects`)."""
        a = tt.tracking_artifacts
        created = now()
        with self._c._write() as conn:
            self._require_run(conn, run_id)
            conn.execute(delete(a).where(a.c.run_id == run_id, a.c.path == path))
            conn.execute(
                a.insert().values(
                    run_id=run_id, path=path, digest=digest, size=size, created_at=created
                )
            )
        return ArtifactRecord(path, digest, size, created)

    def list_artifacts(self, run_id: int, prefix: str = "") -> list[ArtifactRecord]:
        a = tt.tracking_artifacts
        query = select(a).where(a.c.run_id == run_id)
        if prefix:
            query = query.where(a.c.path.startswith(prefix.rstrip("/") + "/", autoescape=True))
        with self._c._read() as conn:
            rows = conn.execute(query.order_by(a.c.path)).all()
        return [ArtifactRecord(x.path, x.digest, int(x.size), x.created_at) for x in rows]

    def get_artifact(self, run_id: int, path: str) -> ArtifactRecord:
        a = tt.tracking_artifacts
        with self._c._read() as conn:
            x = conn.execute(select(a).where(a.c.run_id == run_id, a.c.path == path)).one_or_none()
        if x is None:
            raise NotFoundError(
                f"run {run_id} has no artifact {path!r}",
                hint=f"List them with `lakecache run show {run_id}`.",
            )
        return ArtifactRecord(x.path, x.digest, int(x.size), x.created_at)

    def add_log_chunk(self, run_id: int, stream: str, digest: str, size: int) -> int:
        """Append the lake object ``digest`` to the run's log ``stream``; its start byte."""
        lc = tt.tracking_log_chunks
        stream = check_key("log", stream)[:32]
        with self._c._write() as conn:
            self._require_run(conn, run_id)
            seq, end = conn.execute(
                select(func.max(lc.c.seq), func.max(lc.c.start_byte + lc.c.size)).where(
                    lc.c.run_id == run_id, lc.c.stream == stream
                )
            ).one()
            start = int(end or 0)
            conn.execute(
                lc.insert().values(
                    run_id=run_id,
                    stream=stream,
                    seq=0 if seq is None else int(seq) + 1,
                    start_byte=start,
                    digest=digest,
                    size=size,
                )
            )
        return start

    def list_logs(self, run_id: int) -> dict[str, int]:
        """The run's log streams and each one's size in bytes."""
        lc = tt.tracking_log_chunks
        with self._c._read() as conn:
            rows = conn.execute(
                select(lc.c.stream, func.sum(lc.c.size).label("n"))
                .where(lc.c.run_id == run_id)
                .group_by(lc.c.stream)
                .order_by(lc.c.stream)
            ).all()
        return {x.stream: int(x.n) for x in rows}

    def log_chunks(self, run_id: int, stream: str) -> list[tuple[int, str, int]]:
        """The chunks of a log in order: (start byte, digest, size)."""
        lc = tt.tracking_log_chunks
        with self._c._read() as conn:
            rows = conn.execute(
                select(lc.c.start_byte, lc.c.digest, lc.c.size)
                .where(lc.c.run_id == run_id, lc.c.stream == stream)
                .order_by(lc.c.seq)
            ).all()
        return [(int(x.start_byte), x.digest, int(x.size)) for x in rows]

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _require_run(conn: Connection, run_id: int) -> None:
        if (
            conn.scalar(select(tt.tracking_runs.c.id).where(tt.tracking_runs.c.id == run_id))
            is None
        ):
            raise NotFoundError(f"no run {run_id}", hint="List runs with `lakecache run ls`.")

    @staticmethod
    def _delete_points(conn: Connection, run_ids: list[int]) -> None:
        for table in (tt.tracking_metrics, tt.tracking_system_metrics):
            for start in range(0, len(run_ids), 500):
                conn.execute(delete(table).where(table.c.run_id.in_(run_ids[start : start + 500])))

    @staticmethod
    def _insert_points(
        conn: Connection, table: Table, run_id: int, batch: dict[str, Columns]
    ) -> None:
        """One chunk per key; a small one is appended to the key's newest chunk instead,
        while that is small too (:data:`MERGE_BELOW`) and ends at or before it starts.

        Why: a run logging slowly flushes a few points per key every half second, and a
        row per flush would make a long run's metric tens of thousands of rows, each read
        back for every plot. Appending keeps rows at least ``MERGE_BELOW`` points (a
        million points, a few thousand rows), costs a rewrite of at most that many
        points, and keeps the chunks in step order. Packed arrays append by concatenation.
        The newest chunks are read under row locks (one query for all keys), so two
        batches of one run landing at once on PostgreSQL cannot both append to the same
        version of one; the appends are one executemany."""
        chunks = points.pack(batch)
        small = {c.key: c for c in chunks if c.count < MERGE_BELOW}
        newest: dict[str, Any] = {}
        if small:
            # Each small key's newest chunk (no later one of its key), if small: one query.
            later = table.alias("later")
            for start in range(0, len(small), 500):
                keys = list(small)[start : start + 500]
                query = (
                    select(
                        table.c.id,
                        table.c.key,
                        table.c.count.label("points"),  # not ``count``: a Row's method
                        table.c.last_step,
                        table.c.steps,
                        table.c.times,
                        table.c.vals,
                    )
                    .where(
                        table.c.run_id == run_id,
                        table.c.key.in_(keys),
                        table.c.count < MERGE_BELOW,
                        ~exists().where(
                            later.c.run_id == table.c.run_id,
                            later.c.key == table.c.key,
                            or_(
                                later.c.first_step > table.c.first_step,
                                and_(
                                    later.c.first_step == table.c.first_step,
                                    later.c.id > table.c.id,
                                ),
                            ),
                        ),
                    )
                    .with_for_update()
                )
                newest.update({r.key: r for r in conn.execute(query)})
        appends = []
        rows = []
        for c in chunks:
            old = newest.get(c.key) if c.count < MERGE_BELOW else None
            if old is not None and old.last_step <= c.first_step:
                appends.append(
                    {
                        "_id": old.id,
                        "_count": old.points + c.count,
                        "_last": c.last_step,
                        "_steps": bytes(old.steps) + c.steps,
                        "_times": bytes(old.times) + c.times,
                        "_vals": bytes(old.vals) + c.vals,
                    }
                )
                continue
            rows.append(
                {
                    "run_id": run_id,
                    "key": c.key,
                    "first_step": c.first_step,
                    "last_step": c.last_step,
                    "count": c.count,
                    "steps": c.steps,
                    "times": c.times,
                    "vals": c.vals,
                }
            )
        if appends:
            conn.execute(
                update(table)
                .where(table.c.id == bindparam("_id"))
                .values(
                    count=bindparam("_count"),
                    last_step=bindparam("_last"),
                    steps=bindparam("_steps"),
                    times=bindparam("_times"),
                    vals=bindparam("_vals"),
                ),
                appends,
            )
        if rows:
            conn.execute(table.insert(), rows)

    def _upsert_latest(self, conn: Connection, run_id: int, batch: dict[str, Columns]) -> None:
        latest: list[dict[str, Any]] = []
        for key, (steps, times, vals) in batch.items():
            if not steps:
                continue
            # The highest step, and of those the last logged (usually the last point).
            top = max(steps)
            i = len(steps) - 1 if steps[-1] == top else len(steps) - 1 - steps[::-1].index(top)
            latest.append(
                {
                    "run_id": run_id,
                    "key": key,
                    "step": top,
                    "ts": times[i],
                    "value": _db_value(vals[i]),
                }
            )
        if not latest:
            return
        m = tt.tracking_latest_metrics
        # Only the dialect in use is imported (a SQLite catalog never loads PostgreSQL's).
        dialect = importlib.import_module(f"sqlalchemy.dialects.{self._c._dialect}")
        stmt = dialect.insert(m)
        stmt = stmt.on_conflict_do_update(
            index_elements=[m.c.run_id, m.c.key],
            set_={"step": stmt.excluded.step, "ts": stmt.excluded.ts, "value": stmt.excluded.value},
            where=or_(
                stmt.excluded.step > m.c.step,
                and_(stmt.excluded.step == m.c.step, stmt.excluded.ts >= m.c.ts),
            ),
        )
        conn.execute(stmt, latest)

    @staticmethod
    def _params_of(
        conn: Connection, ids: list[int], keys: Sequence[str] | None
    ) -> dict[int, dict[str, str]]:
        p = tt.tracking_params
        out: dict[int, dict[str, str]] = {}
        if not ids or keys == []:
            return out
        query = select(p.c.run_id, p.c.key, p.c.value).where(p.c.run_id.in_(ids))
        if keys is not None:
            query = query.where(p.c.key.in_(list(keys)))
        # One fetch of plain tuples: a page of 50 runs x 100 params is 5,000 rows, and
        # fetching them one by one as named rows cost more than the query.
        for run_id, key, value in conn.execute(query.order_by(p.c.key)).fetchall():
            out.setdefault(int(run_id), {})[key] = value
        return out

    @staticmethod
    def _latest_of(
        conn: Connection, ids: list[int], keys: Sequence[str] | None
    ) -> dict[int, dict[str, float]]:
        m = tt.tracking_latest_metrics
        out: dict[int, dict[str, float]] = {}
        if not ids or keys == []:
            return out
        query = select(m.c.run_id, m.c.key, m.c.value).where(m.c.run_id.in_(ids))
        if keys is not None:
            query = query.where(m.c.key.in_(list(keys)))
        for run_id, key, value in conn.execute(query.order_by(m.c.key)).fetchall():
            out.setdefault(int(run_id), {})[key] = _nan(value)
        return out


def _run_query() -> Any:
    r, e = tt.tracking_runs, tt.tracking_experiments
    return select(
        r, e.c.name.label("experiment_name"), e.c.owner.label("experiment_owner")
    ).select_from(r.join(e, e.c.id == r.c.experiment_id))


def _run_record(row: Any) -> RunRecord:
    return RunRecord(
        id=int(row.id),
        experiment_id=int(row.experiment_id),
        experiment=row.experiment_name,
        name=row.name,
        user=row.user_name,
        status=row.status,
        started_at=row.started_at,
        ended_at=row.ended_at,
        command=json.loads(row.command),
        env=json.loads(row.env),
        code=json.loads(row.code),
        job_id=row.job_id,
        job_attempt=row.job_attempt,
        flow_run=row.flow_run,
        flow_task=row.flow_task,
        exit_code=row.exit_code,
        experiment_owner=row.experiment_owner,
    )


_OPS = {
    "=": lambda c, v: c == v,
    "!=": lambda c, v: c != v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
}


def _filter_clause(f: RunFilter) -> ColumnElement[bool]:
    r = tt.tracking_runs
    kind, _, key = f.field.partition(":")
    if f.op not in _OPS and f.op != "~":
        raise UserError(f"unknown filter operator {f.op!r}", hint="Use = != < <= > >= or ~.")
    if kind in ("param", "metric", "tag") and key:
        table = {
            "param": tt.tracking_params,
            "metric": tt.tracking_latest_metrics,
            "tag": tt.tracking_tags,
        }[kind]
        value: Any = f.value
        cond: ColumnElement[bool]
        if kind == "metric":
            value = float(f.value)
            if math.isnan(value):
                cond = table.c.value.is_(None)
            elif f.op == "~":
                raise UserError("metrics compare as numbers", hint="Use = != < <= > or >=.")
            else:
                cond = _OPS[f.op](table.c.value, value)
        elif f.op == "~":
            cond = table.c.value.contains(str(value), autoescape=True)
        else:
            cond = _OPS[f.op](table.c.value, str(value))
        return r.c.id.in_(select(table.c.run_id).where(table.c.key == check_key(kind, key), cond))
    column = {"status": r.c.status, "name": r.c.name, "user": r.c.user_name}.get(f.field)
    if column is None:
        raise UserError(
            f"cannot filter runs on {f.field!r}",
            hint="Filter on param:KEY, metric:KEY, tag:KEY, status, name or user.",
        )
    if f.op == "~":
        return column.contains(str(f.value), autoescape=True)
    return _OPS[f.op](column, str(f.value))  # type: ignore[no-any-return]
