"""Flows through the server: start a run of a flow file, list runs, show, cancel, resume.

=========================================  ==========  ==============================
route                                      who         what
=========================================  ==========  ==============================
``POST /flows/runs``                       user        check and start: reader of every
                                                       input, writer of every output dataset
``GET /flows/runs``                        user        own runs (org admins: all)
``GET /flows/runs/{id}``                   submitter   the run and its tasks (the DAG)
``POST /flows/runs/{id}/cancel``           submitter   cancel (org admins: any run)
``POST /flows/runs/{id}/resume``           submitter   re-run failed and cancelled tasks
=========================================  ==========  ==============================

The server advances every running run itself (a thread of the app), so a run
goes on while nobody watches, and after the server restarts. A flow file with
mistakes is refused whole (400, each mistake with its line and fix). Someone who
may not see a run gets the same 404 as for a run that does not exist. A site's
agent user and a job's own token start and see no flows.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from lakecache.errors import NotFoundError
from lakecache.flows.engine import FlowEngine
from lakecache.flows.service import check_output_rights, run_view
from lakecache.flows.spec import DatasetInput, FlowSpec
from lakecache.server.auth import Plane, Principal, User, require_dataset
from lakecache.server.errors import COMMON_RESPONSES, PermissionDeniedError
from lakecache.server.pagination import Page, Paging, paginate
from lakecache.server.runtime import ControlPlane

router = APIRouter(tags=["flows"], responses=COMMON_RESPONSES)

RunId = Annotated[int, Path(ge=1, le=2**62)]
#: The largest flow file the server reads.
MAX_SOURCE = 1 << 20


class FlowRunIn(BaseModel):
    source: str = Field(min_length=1, max_length=MAX_SOURCE, description="The flow file (YAML).")
    source_name: str = Field("flow.yaml", max_length=255, description="Its file name, for errors.")
    params: dict[str, Any] = Field(default_factory=dict, description="--param overrides.")
    code_version: str = Field("none", max_length=200, description="git:<commit>[+diff:<hash>]")


class FlowTaskOut(BaseModel):
    id: int
    name: str
    task: str
    state: str
    depth: int
    deps: list[str]
    params: dict[str, Any]
    command: list[str]
    queue: str
    job_id: int | None
    jobs: list[int]
    tries: int
    started_at: str | None
    ended_at: str | None
    seconds: float | None
    reason: str | None
    inputs: dict[str, Any]
    output_dataset: str | None
    output_commit: str | None
    outputs: dict[str, Any]
    memo: bool
    reused_from: int | None


class FlowRunOut(BaseModel):
    id: int
    flow: str
    state: str
    params: dict[str, Any]
    code_version: str
    submitted_by: str
    created_at: str
    updated_at: str
    ended_at: str | None
    reason: str | None
    counts: dict[str, int]


class FlowRunDetail(FlowRunOut):
    tasks: list[FlowTaskOut]


def _engine(plane: ControlPlane) -> FlowEngine:
    return FlowEngine(plane.hub)


def _person(principal: Principal) -> None:
    if principal.user.agent_site is not None or principal.job is not None:
        raise PermissionDeniedError(
            "a site's agent or a job's token cannot run or see flows",
            hint="Log in as a person (`lakecache login`).",
        )


def _visible(plane: ControlPlane, principal: Principal, run_id: int) -> None:
    _person(principal)
    try:
        run = _engine(plane).store.get_run(run_id)
    except NotFoundError:
        raise _no_run(run_id) from None
    if not principal.org_admin and run.submitted_by != principal.user.name:
        raise _no_run(run_id)


def _no_run(run_id: int) -> NotFoundError:
    return NotFoundError(f"no flow run {run_id}", hint="List your runs with `lakecache flow ls`.")


@router.post("/flows/runs", response_model=FlowRunDetail, status_code=201)
def start_run(body: FlowRunIn, principal: User, plane: Plane) -> dict[str, Any]:
    """Check a flow file and start a run of it; the server advances it from then on.

    Every dataset input must be readable by the caller and every ``dataset:`` output
    writable (404 as for a missing dataset otherwise), and so must the flow's
    artifacts dataset where it exists (400 naming it otherwise): outputs are
    committed as the caller. A file with mistakes is refused whole, each mistake
    with its line and fix.
    """
    _person(principal)
    flow = FlowSpec.from_text(body.source, body.source_name)
    engine = _engine(plane)
    for task in flow.tasks:
        for i in task.inputs:
            if isinstance(i, DatasetInput):
                require_dataset(plane, principal, i.dataset, "reader")
        for o in task.outputs:
            if o.dataset is not None:
                require_dataset(plane, principal, o.dataset, "writer")
    # Outputs are committed as the caller: the flow's artifacts dataset too must be theirs
    # to write (another user's flow of the same name made it), checked before anything runs.
    check_output_rights(plane.hub, principal.user.name, flow)
    run_id = engine.start(
        flow, body.params, code=body.code_version, submitted_by=principal.user.name
    )
    return run_view(engine, run_id)


@router.get("/flows/runs", response_model=Page[FlowRunOut])
def list_runs(
    principal: User,
    plane: Plane,
    paging: Paging,
    state: Annotated[list[str] | None, Query(max_length=16)] = None,
    flow: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[FlowRunOut]:
    """Flow runs, newest first: your own (org admins: everyone's)."""
    _person(principal)
    runs = _engine(plane).store.list_runs(
        states=state,
        flow=flow,
        submitted_by=None if principal.org_admin else principal.user.name,
        limit=10_000,
    )
    page = paginate(runs, paging)
    return Page[FlowRunOut](
        items=[FlowRunOut(**r.as_dict()) for r in page.items],
        next_cursor=page.next_cursor,
        total=page.total,
    )


@router.get("/flows/runs/{run_id}", response_model=FlowRunDetail)
def show_run(run_id: RunId, principal: User, plane: Plane) -> dict[str, Any]:
    """The run and its tasks: each one's state, deps (the DAG), job, tries and timings."""
    _visible(plane, principal, run_id)
    return run_view(_engine(plane), run_id)


@router.post("/flows/runs/{run_id}/cancel", response_model=FlowRunDetail)
def cancel_run(run_id: RunId, principal: User, plane: Plane) -> dict[str, Any]:
    """Cancel the run: pending tasks at once, running jobs through their agents."""
    _visible(plane, principal, run_id)
    engine = _engine(plane)
    engine.cancel(run_id)
    return run_view(engine, run_id)


@router.post("/flows/runs/{run_id}/resume", response_model=FlowRunDetail)
def resume_run(run_id: RunId, principal: User, plane: Plane) -> dict[str, Any]:
    """Re-run the failed and cancelled tasks of an ended run, and what depends on them."""
    _visible(plane, principal, run_id)
    engine = _engine(plane)
    engine.resume(run_id)
    return run_view(engine, run_id)
