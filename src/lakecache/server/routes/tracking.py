"""Run tracking through the server: experiments, runs, what they logged, artifacts, logs.

===================================================  ===========  ===========================
route                                                who          what
===================================================  ===========  ===========================
``GET|POST /tracking/experiments``                   user         list visible | create own
``GET /tracking/experiments/{experiment}``           user         one (404 if not visible)
``GET /tracking/runs``                               user         runs page: sort, filter, page
``POST /tracking/runs``                              user         start a run of one's own
``POST /tracking/job-runs``                          job's agent  a run for a job attempt
``GET /tracking/runs/{id}``                          viewer       everything but the points
``POST /tracking/runs/{id}/batch``                   logger       params, tags, metric points
``POST /tracking/runs/{id}/end``                     logger       status, exit code
``POST /tracking/runs/{id}/inputs``                  logger       a dataset commit read
``GET /tracking/runs/{id}/metrics/{key}``            viewer       series (downsampled) or CSV
``GET|PUT /tracking/runs/{id}/artifacts/{path}``     viewer|lgr   download | upload
``GET /tracking/runs/{id}/artifacts``                viewer       list
``GET|PUT /tracking/runs/{id}/logs/{stream}``        viewer|lgr   read from offset | append
===================================================  ===========  ===========================

Viewers and loggers are as :mod:`lakecache.tracking.access` says; a running
job's own token logs to its job's runs only. Someone who may not see a run
gets the same 404 as for a run that does not exist.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from lakecache.errors import NotFoundError, UserError
from lakecache.server.auth import Plane, Principal, User
from lakecache.server.bodies import read_body, spool_body
from lakecache.server.errors import COMMON_RESPONSES, PermissionDeniedError
from lakecache.server.pagination import Page, Paging, encode_cursor
from lakecache.server.runtime import ControlPlane
from lakecache.server.tracking_models import (
    ArtifactOut,
    BatchOut,
    EndIn,
    ExperimentIn,
    ExperimentOut,
    InputIn,
    InputOut,
    JobRunIn,
    LatestOut,
    LogAppended,
    RunDetail,
    RunIn,
    RunOut,
    RunRow,
    SeriesOut,
)
from lakecache.tracking import objects
from lakecache.tracking.access import can_see_experiment, can_see_run
from lakecache.tracking.model import (
    ArtifactRecord,
    Batch,
    ExperimentRecord,
    RunFilter,
    RunRecord,
    encode_value,
)
from lakecache.tracking.store import DEFAULT_EXPERIMENT, JOBS_EXPERIMENT, TrackingStore

router = APIRouter(prefix="/tracking", tags=["tracking"], responses=COMMON_RESPONSES)

RunId = Annotated[int, Path(ge=1, le=2**62)]
#: The largest batch body (JSON) one request carries.
BATCH_MAX = 64 << 20
#: The largest log chunk one request appends.
LOG_CHUNK = 4 << 20
_OCTETS = {"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}}


def store_of(plane: ControlPlane) -> TrackingStore:
    return TrackingStore(plane.hub.catalog)


def _no_run(run_id: int) -> NotFoundError:
    return NotFoundError(f"no run {run_id}", hint="List runs with `lakecache run ls`.")


def _job_site(plane: ControlPlane, job_id: int | None) -> str | None:
    if job_id is None:
        return None
    from lakecache.compute.store import ComputeStore

    try:
        return ComputeStore(plane.hub.catalog).get_job(job_id).site
    except NotFoundError:
        return None


def visible_run(plane: ControlPlane, principal: Principal, run_id: int) -> RunRecord:
    """The run if the caller may see it, else the 404 of a run that does not exist."""
    try:
        run = store_of(plane).get_run(run_id)
    except NotFoundError:
        raise _no_run(run_id) from None
    return _visible(plane, principal, run)


def visible_runs(plane: ControlPlane, principal: Principal, run_ids: list[int]) -> list[RunRecord]:
    """:func:`visible_run` for many runs, read in one query: the same 404 for the first
    one that is missing or that the caller may not see."""
    runs = {r.id: r for r in store_of(plane).get_runs(run_ids)}
    out = []
    for run_id in run_ids:
        run = runs.get(run_id)
        if run is None:
            raise _no_run(run_id)
        out.append(_visible(plane, principal, run))
    return out


def _visible(plane: ControlPlane, principal: Principal, run: RunRecord) -> RunRecord:
    run_id = run.id
    if principal.job is not None:
        if run.job_id == principal.job.job_id:
            return run
        raise _no_run(run_id)
    site = principal.user.agent_site
    if site is not None:
        if run.job_id is not None and _job_site(plane, run.job_id) == site:
            return run
        raise _no_run(run_id)
    if can_see_run(run, principal.user.name, org_admin=principal.org_admin):
        return run
    raise _no_run(run_id)


def logged_run(plane: ControlPlane, principal: Principal, run_id: int) -> RunRecord:
    """The run if the caller may log to it: its user, its job's token or agent, an org admin."""
    run = visible_run(plane, principal, run_id)
    if principal.job is not None or principal.user.agent_site is not None:
        return run  # visible_run let them through only for their own job's runs
    if principal.org_admin or run.user == principal.user.name:
        return run
    raise PermissionDeniedError(
        f"run {run_id} is {run.user}'s: only they (or their job) log to it",
        hint="Start a run of your own with lakecache.tracking.start().",
    )


def _person(principal: Principal) -> None:
    if principal.job is not None or principal.user.agent_site is not None:
        raise PermissionDeniedError(
            "a job's or a site agent's token does not start runs of its own",
            hint="Log to the job's run (lakecache.tracking.current()), or use your own token.",
        )


# -- experiments -------------------------------------------------------------------------


@router.get("/experiments", response_model=list[ExperimentOut])
def list_experiments(principal: User, plane: Plane) -> list[ExperimentOut]:
    """The experiments the caller may see, by name, with their run counts."""
    visible_to = None if principal.org_admin else principal.user.name
    return [ExperimentOut.of(e) for e in store_of(plane).list_experiments(visible_to=visible_to)]


@router.post("/experiments", response_model=ExperimentOut, status_code=201)
def create_experiment(body: ExperimentIn, principal: User, plane: Plane) -> ExperimentOut:
    """Create an experiment owned by the caller (409 if the name is taken)."""
    _person(principal)
    return ExperimentOut.of(store_of(plane).create_experiment(body.name, principal.user.name))


@router.get("/experiments/{experiment}", response_model=ExperimentOut)
def get_experiment(
    experiment: Annotated[str, Path(min_length=1, max_length=255)], principal: User, plane: Plane
) -> ExperimentOut:
    """One experiment, by name or id."""
    return ExperimentOut.of(visible_experiment(plane, principal, experiment))


def visible_experiment(plane: ControlPlane, principal: Principal, name: str) -> ExperimentRecord:
    """The experiment if the caller may see it, else the 404 of one that does not exist."""
    store = store_of(plane)
    missing = NotFoundError(
        f"no experiment {name!r}", hint="List them with `lakecache experiment ls`."
    )
    try:
        exp = store.get_experiment(name)
    except NotFoundError:
        raise missing from None
    has_run = False
    if not principal.org_admin and exp.owner not in ("", principal.user.name):
        has_run = store.list_runs(exp.name, visible_to=principal.user.name, limit=1).total > 0
    if principal.job is not None or principal.user.agent_site is not None:
        raise missing
    if not can_see_experiment(
        exp, principal.user.name, org_admin=principal.org_admin, has_run=has_run
    ):
        raise missing
    return exp


# -- runs --------------------------------------------------------------------------------


@router.get("/runs", response_model=Page[RunRow])
def list_runs(
    principal: User,
    plane: Plane,
    page: Paging,
    experiment: Annotated[str | None, Query(max_length=255)] = None,
    order_by: Annotated[str, Query(max_length=260)] = "start_time",
    descending: bool = True,
    filter: Annotated[list[str] | None, Query(max_length=50)] = None,  # noqa: A002 - the API's word
    flow_run: Annotated[str | None, Query(max_length=64)] = None,
    job_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Page[RunRow]:
    """A page of the runs the caller may see, sorted by ``order_by`` (``start_time``,
    ``name``, ``param:KEY``, ``metric:KEY``...) and narrowed by each ``filter``
    (``metric:loss<0.5``, ``param:lr=0.1``, ``status=finished``, ``name~resnet``)."""
    _person(principal)
    if experiment is not None:
        visible_experiment(plane, principal, experiment)
    offset = page.offset()
    result = store_of(plane).list_runs(
        experiment,
        visible_to=None if principal.org_admin else principal.user.name,
        order_by=order_by,
        descending=descending,
        filters=[RunFilter.parse(f) for f in filter or []],
        limit=page.limit,
        offset=offset,
        flow_run=flow_run,
        job_id=job_id,
    )
    end = offset + len(result.items)
    return Page[RunRow](
        items=[RunRow.of(s) for s in result.items],
        next_cursor=encode_cursor({"o": end}) if end < result.total else None,
        total=result.total,
    )


@router.post("/runs", response_model=RunOut, status_code=201)
def start_run(body: RunIn, principal: User, plane: Plane) -> RunOut:
    """Start a run of the caller's in ``experiment`` (made, owned by the caller, if it
    does not exist; ``Default`` is shared). An experiment the caller may not see is 404."""
    _person(principal)
    store = store_of(plane)
    name = principal.user.name
    try:
        exp = store.get_experiment(body.experiment)
    except NotFoundError:
        exp = None
    if exp is not None:
        visible_experiment(plane, principal, body.experiment)
    owner = "" if body.experiment in (DEFAULT_EXPERIMENT, JOBS_EXPERIMENT) else name
    run = store.create_run(
        body.experiment,
        user=name,
        name=body.name,
        command=body.command,
        env=body.env,
        code=body.code,
        experiment_owner=owner,
    )
    return RunOut.of(run)


@router.post("/job-runs", response_model=RunOut, status_code=201)
def start_job_run(body: JobRunIn, principal: User, plane: Plane) -> RunOut:
    """The run of one attempt of a job, in the job's experiment (``LAKECACHE_EXPERIMENT``
    in its environment, else ``jobs``), as the job's submitter. Made by the agent of the
    job's site (or an org admin); asking again for the same attempt gives the same run,
    with the environment and code version given then (the agent reads them meanwhile)."""
    from lakecache.compute.store import ComputeStore

    try:
        job = ComputeStore(plane.hub.catalog).get_job(body.job_id)
    except NotFoundError:
        job = None
    site = principal.user.agent_site
    allowed = job is not None and ((principal.org_admin) or (site is not None and job.site == site))
    if job is None or not allowed:
        if principal.job is None and site is None and not principal.org_admin:
            raise PermissionDeniedError(
                "only the agent of the job's site (or an org admin) starts a job's run",
                hint="A job's run is made by its agent; start your own with POST /tracking/runs.",
            )
        raise NotFoundError(f"no job {body.job_id}", hint="List jobs with `lakecache job ls`.")
    from lakecache.tracking.jobs import job_run

    return RunOut.of(
        job_run(
            store_of(plane), job, body.attempt, command=body.command, env=body.env, code=body.code
        )
    )


@router.get("/runs/{run_id}", response_model=RunDetail)
def get_run(run_id: RunId, principal: User, plane: Plane) -> RunDetail:
    """The run, its params, tags, latest metrics, system metric keys, dataset inputs,
    artifacts and logs (not the points: ``/metrics/{key}``)."""
    run = visible_run(plane, principal, run_id)
    store = store_of(plane)
    return RunDetail(
        run=RunOut.of(run),
        params=store.run_params(run_id),
        tags=store.run_tags(run_id),
        metrics={
            k: LatestOut(value=encode_value(p.value), step=p.step, timestamp=p.ts)
            for k, p in store.latest_metrics(run_id).items()
        },
        system_metrics=store.system_metric_keys(run_id),
        inputs=[InputOut.of(i) for i in store.run_inputs(run_id)],
        artifacts=[ArtifactOut.of(a) for a in store.list_artifacts(run_id)],
        logs=store.list_logs(run_id),
    )


@router.post(
    "/runs/{run_id}/batch",
    response_model=BatchOut,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "params": {"type": "object"},
                            "tags": {"type": "object"},
                            "metrics": {"type": "object"},
                            "system": {"type": "object"},
                        },
                    }
                }
            }
        }
    },
)
async def log_batch(run_id: RunId, request: Request, principal: User, plane: Plane) -> BatchOut:
    """Store params, tags and points: ``{"params": {k: v}, "tags": {k: v}, "metrics":
    {key: [steps, timestamps_ms, values]}, "system": {...}}``. Values may be NaN or
    infinite (as ``"NaN"``/``"Infinity"``, or Python's bare tokens). One transaction."""
    await run_in_threadpool(logged_run, plane, principal, run_id)
    body = await read_body(request, BATCH_MAX, "a batch", hint="Send smaller batches.")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise UserError(f"the batch is not JSON: {exc}", hint="Send a JSON object.") from None
    if not isinstance(data, dict):
        raise UserError("the batch must be a JSON object", hint='Send {"metrics": {...}}.')
    batch = Batch.from_json(data)
    await run_in_threadpool(store_of(plane).log_batch, run_id, batch)
    return BatchOut(stored=len(batch))


@router.post("/runs/{run_id}/end", response_model=RunOut)
def end_run(run_id: RunId, body: EndIn, principal: User, plane: Plane) -> RunOut:
    """Record how the run ended (again: the last word wins)."""
    logged_run(plane, principal, run_id)
    store = store_of(plane)
    store.end_run(run_id, body.status, exit_code=body.exit_code, ended_at=plane.clock.now())
    return RunOut.of(store.get_run(run_id))


@router.post("/runs/{run_id}/inputs", status_code=204, response_class=Response)
def record_input(run_id: RunId, body: InputIn, principal: User, plane: Plane) -> Response:
    """Note a dataset commit the run read (recorded once per commit, source and reader)."""
    logged_run(plane, principal, run_id)
    store_of(plane).record_input(run_id, **body.model_dump(), at=plane.clock.now())
    return Response(status_code=204)


@router.get(
    "/runs/{run_id}/metrics/{key:path}",
    response_model=SeriesOut,
    responses={200: {"content": {"text/csv": {}}}},
)
def metric_series(
    run_id: RunId,
    key: Annotated[str, Path(min_length=1, max_length=250)],
    principal: User,
    plane: Plane,
    buckets: Annotated[int, Query(ge=10, le=100_000)] = 1000,
    system: bool = False,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",  # noqa: A002 - the API's word
    start: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    end: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    axis: Annotated[str, Query(pattern="^(step|time)$")] = "step",
) -> SeriesOut | StreamingResponse:
    """A metric's series: every point up to ``buckets``, else the first and last points
    and between them, per bucket of steps, its first step, mean, min and max.
    ``start``/``end``: only that range of steps (or of epoch seconds with ``axis=time``).
    ``format=csv``: every point, as CSV (step, timestamp_ms, value). ``system=true``: a
    system metric."""
    visible_run(plane, principal, run_id)
    store = store_of(plane)
    if format == "csv":
        return StreamingResponse(
            store.metric_csv(run_id, key, system=system),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="run-{run_id}-metric.csv"'},
        )
    return SeriesOut.of(
        store.metric_series(
            run_id, key, buckets=buckets, system=system, start=start, end=end, axis=axis
        )
    )


@router.get("/runs/{run_id}/artifacts", response_model=list[ArtifactOut])
def list_artifacts(
    run_id: RunId,
    principal: User,
    plane: Plane,
    prefix: Annotated[str, Query(max_length=1024)] = "",
) -> list[ArtifactOut]:
    """The run's artifacts by path (under ``prefix``, a folder, if given)."""
    visible_run(plane, principal, run_id)
    return [ArtifactOut.of(a) for a in store_of(plane).list_artifacts(run_id, prefix)]


@router.get(
    "/runs/{run_id}/artifacts/{path:path}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_artifact(
    run_id: RunId,
    path: Annotated[str, Path(min_length=1, max_length=1024)],
    principal: User,
    plane: Plane,
) -> Response:
    """An artifact's bytes."""
    visible_run(plane, principal, run_id)
    data = objects.read_artifact(store_of(plane), plane.hub.lake, run_id, path)
    return Response(data, media_type="application/octet-stream")


@router.put(
    "/runs/{run_id}/artifacts/{path:path}", response_model=ArtifactOut, openapi_extra=_OCTETS
)
async def upload_artifact(
    run_id: RunId,
    path: Annotated[str, Path(min_length=1, max_length=1024)],
    request: Request,
    principal: User,
    plane: Plane,
) -> ArtifactOut:
    """Store the body as the run's artifact ``path`` (hashed here; stored once in the lake
    whoever uploads the same bytes). A path with ``..``, ``.`` or empty parts is refused;
    so is a body over the server's ``max_output_bytes`` (413) or its disk's free space
    (507), and nothing of it is kept."""
    name = objects.artifact_path(path)
    await run_in_threadpool(logged_run, plane, principal, run_id)
    spool = plane.hub.settings.home / "tracking-uploads"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool) as tmp:
        file = FsPath(tmp) / "artifact"
        await spool_body(request, file, *artifact_limit(plane, name))
        record = await run_in_threadpool(_store_artifact, plane, run_id, file, name)
    return ArtifactOut.of(record)


def artifact_limit(plane: ControlPlane, name: str) -> tuple[int, str]:
    """(the most bytes an artifact may have: the ``max_output_bytes`` setting, what to
    call it in a refusal)."""
    return plane.hub.settings.max_output_bytes, f"artifact {name!r}"


def _store_artifact(plane: ControlPlane, run_id: int, file: FsPath, name: str) -> ArtifactRecord:
    store = store_of(plane)
    digest, size = objects.put_file(plane.hub.lake, file)
    return store.add_artifact(run_id, name, digest, size)


@router.get(
    "/runs/{run_id}/logs/{stream}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def read_log(
    run_id: RunId,
    stream: Annotated[str, Path(min_length=1, max_length=32)],
    principal: User,
    plane: Plane,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=16 << 20)] = 1 << 20,
) -> Response:
    """Up to ``limit`` bytes of a log (``stdout``, ``stderr``, ``job``) from ``offset``;
    poll with a growing offset to follow a run."""
    visible_run(plane, principal, run_id)
    data = objects.read_log(store_of(plane), plane.hub.lake, run_id, stream, offset, limit)
    return Response(data, media_type="application/octet-stream")


@router.put("/runs/{run_id}/logs/{stream}", response_model=LogAppended, openapi_extra=_OCTETS)
async def append_log(
    run_id: RunId,
    stream: Annotated[str, Path(min_length=1, max_length=32, pattern="^[a-z0-9_.-]+$")],
    request: Request,
    principal: User,
    plane: Plane,
) -> LogAppended:
    """Append the body (up to 4 MiB) to a log of the run."""
    await run_in_threadpool(logged_run, plane, principal, run_id)
    data = await read_body(request, LOG_CHUNK, "a log chunk", hint="Send it in parts.")
    start = await run_in_threadpool(
        objects.append_log, store_of(plane), plane.hub.lake, run_id, stream, data
    )
    return LogAppended(start=start, size=len(data))
