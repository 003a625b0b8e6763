"""Compute through the server: capacity, templates, queues, jobs, and what agents report.

People (any logged-in user unless said):

=========================================  ==========  ==============================
route                                      who         what
=========================================  ==========  ==============================
``GET /compute/capacity``                  user        capacity, used and free per resource
``PUT /compute/{compute}/capacity``        org admin   set a resource's capacity
``DELETE /compute/{compute}``              org admin   remove a resource with no templates
``GET|POST /templates``                    user|admin  list | add (org admins)
``DELETE /templates/{template}``           org admin   remove one no queue names
``GET|POST /queues``                       user|admin  list (with job counts) | add
``POST /jobs``                             user        submit: reader of every input
``POST /jobs/batch``                       user        submit up to 1,000 at once, all or none
``GET /jobs``                              user        own jobs (org admins: all)
``GET /jobs/{id}``                         submitter   the job, timeline and placement
``GET /jobs/{id}/log?offset=N``            submitter   the log from byte N (poll to follow)
``POST /jobs/{id}/cancel``                 submitter   cancel (org admins: any job)
``GET /jobs/{id}/outputs``                 submitter   the collected outputs (files)
``GET /jobs/{id}/outputs/{path}``          submitter   one output's bytes, from the lake
=========================================  ==========  ==============================

Agents (the agent user of the job's site, or an org admin), each step fenced
by the attempt's token exactly as in direct mode (:mod:`lakecache.compute.store`):

=========================================  ===========================================
``POST /scheduler/pass``                   requeue the silent, fail the overdue, admit
``GET /sites/{site}/placed-jobs``          jobs placed on the site's compute
``POST /jobs/{id}/claim``                  placed -> running: the fencing token, and
                                           the job-scoped token the job runs with
``POST /jobs/{id}/heartbeat``              alive; answers ``run`` or ``cancel``
``POST /jobs/{id}/events``                 a timeline entry (preparing, data ready...)
``POST /jobs/{id}/finish``                 the attempt's end: state, exit code, reason
``POST /jobs/{id}/release``                give the attempt back (requeued, or failed)
``PUT /jobs/{id}/log?token=T&offset=N``    the attempt's log from byte N
``PUT /jobs/{id}/outputs?token=T``         the attempt's outputs, a tar stream: with the
                                           job's own token (only its own job's), or as
                                           the agent that claimed the attempt
=========================================  ===========================================

A stale token (the job was requeued and another attempt runs, or it ended)
gets 409 ``taken_over``: the runner stops and reports nothing more.

Every report may be sent again (the runner does when its connection broke:
behind a load balancer the replica it reached may have died mid-request, after
or before it wrote): a claim repeated by the worker that won it gets the same
token (and a new job token: the first was never received), an event with the
``key`` of one already written is not written again, a finish repeated once
the attempt ended that way answers as the first did, and a release repeated
gets 409 ``taken_over`` (the attempt was given back all the same: its runner
stops either way).

Logs are kept on the server's disk (``<home>/job-logs``), one file per
attempt; a reader asks from an offset and polls for more until the job has
ended. Someone who may not see a job gets the same 404 as for a job that does
not exist. Times are the server's clock.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from lakecache.compute import tables as ct
from lakecache.compute.model import InputSpec, JobRecord, JobSpec
from lakecache.compute.store import ComputeStore
from lakecache.compute.tokens import JobTokens
from lakecache.errors import (
    ConflictError,
    LakecacheError,
    NotFoundError,
    TakenOverError,
    UserError,
)
from lakecache.server.auth import OrgAdmin, Plane, Principal, User, require_dataset
from lakecache.server.bodies import read_body, spool_body
from lakecache.server.errors import COMMON_RESPONSES, ErrorBody, PermissionDeniedError
from lakecache.server.job_models import (
    BeatOut,
    CapacityOut,
    ClaimJobIn,
    ClaimJobOut,
    EventIn,
    FencedIn,
    FinishIn,
    JobIn,
    JobOut,
    JobsIn,
    JobState,
    LogWritten,
    MovedJob,
    OutputOut,
    OutputsStored,
    PassIn,
    PassOut,
    QueueIn,
    QueueOut,
    ReleaseIn,
    SizeIO,
    TemplateIn,
    TemplateOut,
    queue_out,
)
from lakecache.server.pagination import Page, Paging, paginate
from lakecache.server.runtime import ControlPlane

log = logging.getLogger("lakecache.server")

router = APIRouter(tags=["compute"], responses=COMMON_RESPONSES)

Name = Annotated[str, Path(min_length=1, max_length=64)]
JobId = Annotated[int, Path(ge=1, le=2**62)]
#: The most bytes of log one request carries (either way).
LOG_CHUNK = 4 << 20


def _store(plane: ControlPlane) -> ComputeStore:
    return ComputeStore(plane.hub.catalog)


def _worker_prefix(principal: Principal) -> str:
    return f"{principal.user.name}/"


def _no_job(job_id: int) -> NotFoundError:
    return NotFoundError(f"no job {job_id}", hint="List your jobs with `lakecache job ls`.")


def _visible_job(plane: ControlPlane, principal: Principal, job_id: int) -> JobRecord:
    """The job if the caller may see it: its submitter, an org admin, or its site's agent."""
    try:
        job = _store(plane).get_job(job_id)
    except NotFoundError:
        raise _no_job(job_id) from None
    site = principal.user.agent_site
    if principal.org_admin or (site is None and job.submitted_by == principal.user.name):
        return job
    if site is not None and job.site == site:
        return job
    raise _no_job(job_id)


def _worked_job(plane: ControlPlane, principal: Principal, job_id: int) -> JobRecord:
    """The job if the caller runs jobs at its site: that site's agent user, or an org admin."""
    job = _visible_job(plane, principal, job_id)
    if principal.user.agent_site is None and not principal.org_admin:
        raise PermissionDeniedError(
            "only the agent of the job's site (or an org admin) reports on a job",
            hint="Run `lakecache agent --site SITE` logged in as the site's agent user.",
        )
    return job


def _claimed(plane: ControlPlane, principal: Principal, job_id: int, token: int) -> JobRecord:
    """The job if ``token`` is its running attempt and the caller claimed it (or is an org
    admin); else 409 ``taken_over``, so a stale runner stops."""
    job = _reported_job(plane, principal, job_id, token)
    mine = principal.org_admin or (job.worker or "").startswith(_worker_prefix(principal))
    if job.state != "running" or job.attempt != token or not mine:
        raise _stale(job, token)
    return job


def _reported_job(plane: ControlPlane, principal: Principal, job_id: int, token: int) -> JobRecord:
    """:func:`_worked_job`, except that a job requeued off the caller's site since its
    attempt ``token`` (claimed by the caller) is 409 ``taken_over``, not 404: its runner
    must stop, not retry."""
    try:
        return _worked_job(plane, principal, job_id)
    except NotFoundError:
        a = ct.compute_job_attempts
        with plane.hub.catalog._read() as conn:
            worker = conn.scalar(
                select(a.c.worker).where(a.c.job_id == job_id, a.c.number == token)
            )
        if worker is None or not str(worker).startswith(_worker_prefix(principal)):
            raise
        raise _stale(_store(plane).get_job(job_id), token) from None


def _ended_as(
    plane: ControlPlane,
    principal: Principal,
    job_id: int,
    token: int,
    outcome: str,
    exit_code: int | None,
) -> bool:
    """True if the caller's attempt ``token`` already ended as ``outcome`` with
    ``exit_code`` and is still the job's latest: a finish sent again after its connection
    broke, whose first send was written."""
    store = _store(plane)
    ended = store.attempt(job_id, token)
    return (
        ended is not None
        and ended.outcome == outcome
        and ended.exit_code == exit_code
        and (principal.org_admin or ended.worker.startswith(_worker_prefix(principal)))
        and store.get_job(job_id).attempt == token
    )


def _stale(job: JobRecord, token: int) -> TakenOverError:
    return TakenOverError(
        f"attempt {token} of job {job.id} is no longer its running one "
        f"(the job is {job.state}, attempt {job.attempt})",
        hint="Stop this attempt and report nothing more: the job was requeued, cancelled "
        "or has ended.",
    )


# -- capacity, templates, queues -------------------------------------------------------


@router.get("/compute/capacity", response_model=list[CapacityOut])
def capacity(_: User, plane: Plane) -> list[CapacityOut]:
    """Each compute resource's capacity, what its placed and running jobs hold, and what is free."""
    return [CapacityOut.of(c) for c in _store(plane).capacity()]


@router.put("/compute/{compute}/capacity", response_model=CapacityOut)
def set_capacity(compute: Name, body: SizeIO, _: OrgAdmin, plane: Plane) -> CapacityOut:
    """Set what a compute resource can run at once (org admins)."""
    store = _store(plane)
    store.set_capacity(compute, body.size())
    return next(CapacityOut.of(c) for c in store.capacity() if c.compute == compute)


@router.delete("/compute/{compute}", status_code=204, response_class=Response)
def remove_compute(compute: Name, _: OrgAdmin, plane: Plane) -> Response:
    """Remove a compute resource that has no templates (org admins)."""
    _store(plane).remove_compute(compute)
    return Response(status_code=204)


@router.get("/templates", response_model=list[TemplateOut])
def list_templates(_: User, plane: Plane) -> list[TemplateOut]:
    """Every template: a named size on a compute resource."""
    return [TemplateOut.of(t) for t in _store(plane).list_templates()]


@router.post("/templates", response_model=TemplateOut, status_code=201)
def add_template(body: TemplateIn, _: OrgAdmin, plane: Plane) -> TemplateOut:
    """Add a template; refused if larger than its compute resource (org admins)."""
    tpl = _store(plane).add_template(
        body.name, body.compute, body.size.size(), body.image, plane.clock.now()
    )
    return TemplateOut.of(tpl)


@router.delete("/templates/{template}", status_code=204, response_class=Response)
def remove_template(template: Name, _: OrgAdmin, plane: Plane) -> Response:
    """Remove a template no queue names and no job holds a slot of (org admins)."""
    _store(plane).remove_template(template)
    return Response(status_code=204)


@router.get("/queues", response_model=list[QueueOut])
def list_queues(_: User, plane: Plane) -> list[QueueOut]:
    """Every queue: its templates in order, policy, deadline, and how many jobs it has."""
    store = _store(plane)
    active = store.list_jobs(states=("queued", "placed", "running"))
    return [
        queue_out(
            q,
            queued=sum(1 for j in active if j.queue == q.name and j.state == "queued"),
            running=sum(1 for j in active if j.queue == q.name and j.state != "queued"),
        )
        for q in store.list_queues()
    ]


@router.post("/queues", response_model=QueueOut, status_code=201)
def add_queue(body: QueueIn, _: OrgAdmin, plane: Plane) -> QueueOut:
    """Add a queue over templates, in order (org admins)."""
    deadline = (
        None
        if body.pending_deadline_seconds is None
        else timedelta(seconds=body.pending_deadline_seconds)
    )
    q = _store(plane).add_queue(
        body.name,
        body.templates,
        policy=body.policy,
        pending_deadline=deadline,
        job_timeout=None
        if body.job_timeout_seconds is None
        else timedelta(seconds=body.job_timeout_seconds),
        agent_down=body.agent_down,
        now=plane.clock.now(),
    )
    return queue_out(q)


# -- jobs --------------------------------------------------------------------------------


def _spec(plane: ControlPlane, principal: Principal, body: JobIn) -> JobSpec:
    """What ``body`` asks, with each input's ref pinned to its commit now; refused (404 as
    for a missing dataset) unless the caller may read every input's dataset."""
    catalog = plane.hub.catalog
    inputs = []
    for i in body.inputs:
        require_dataset(plane, principal, i.dataset, "reader")
        commit_id = catalog.resolve(i.dataset, i.ref)
        if i.commit_id and catalog.resolve(i.dataset, i.commit_id) != commit_id:
            raise UserError(
                f"input {i.name}: {i.dataset}@{i.ref} is commit {commit_id[:12]}, "
                f"not {i.commit_id[:12]}",
                hint="The ref moved since you resolved it: submit again.",
            )
        inputs.append(InputSpec(i.name, i.dataset, i.ref, commit_id, i.mode))
    return JobSpec(
        body.queue,
        tuple(body.command),
        body.request.size(),
        tuple(inputs),
        dict(body.env),
        body.image,
        body.max_attempts,
        body.timeout_seconds,
    )


def _submit(plane: ControlPlane, principal: Principal, specs: list[JobSpec]) -> list[JobOut]:
    store, now = _store(plane), plane.clock.now()
    jobs = store.submit_many(specs, submitted_by=principal.user.name, now=now)
    try:
        store.admit_many([j.id for j in jobs], now=now)
    except LakecacheError as exc:
        # Queued already; the next scheduler pass (every agent runs them) places them.
        log.warning("%d job(s) queued, not placed yet: %s", len(jobs), exc.message)
    return [JobOut.of(j) for j in store.get_jobs([j.id for j in jobs])]


@router.post("/jobs", response_model=JobOut, status_code=201)
def submit(body: JobIn, principal: User, plane: Plane) -> JobOut:
    """Submit a job; it is placed at once if a template of its queue has room.

    Each input's dataset must be readable by the caller (404 as for a missing
    dataset otherwise); its ref is pinned to a commit now. Refused with a hint
    for an unknown queue, dataset or ref, or a job larger than every template.
    """
    return _submit(plane, principal, [_spec(plane, principal, body)])[0]


@router.post("/jobs/batch", response_model=list[JobOut], status_code=201)
def submit_batch(body: JobsIn, principal: User, plane: Plane) -> list[JobOut]:
    """Submit up to 1,000 jobs in one transaction, each checked as ``POST /jobs`` checks
    one; all or none (a refusal names the job by its position). Those with room are
    placed at once, in the order given."""
    return _submit(plane, principal, [_spec(plane, principal, j) for j in body.jobs])


@router.get("/jobs", response_model=Page[JobOut])
def list_jobs(
    principal: User,
    plane: Plane,
    paging: Paging,
    state: Annotated[list[JobState] | None, Query()] = None,
    queue: Annotated[str | None, Query(max_length=64)] = None,
    site: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[JobOut]:
    """Jobs, oldest first: your own (org admins: everyone's; a site's agent: its site's)."""
    jobs = _store(plane).list_jobs(states=state, queue=queue, site=site)
    agent_site = principal.user.agent_site
    if agent_site is not None:
        jobs = [j for j in jobs if j.site == agent_site]
    elif not principal.org_admin:
        jobs = [j for j in jobs if j.submitted_by == principal.user.name]
    page = paginate(jobs, paging)
    return Page[JobOut](
        items=[JobOut.of(j) for j in page.items], next_cursor=page.next_cursor, total=page.total
    )


@router.get("/jobs/{job_id}", response_model=JobOut)
def show_job(job_id: JobId, principal: User, plane: Plane) -> JobOut:
    """The job, why it was placed where (each template's verdict), and its timeline."""
    job = _visible_job(plane, principal, job_id)
    return JobOut.of(job, _store(plane).timeline(job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: JobId, principal: User, plane: Plane) -> JobOut:
    """Cancel: at once if not started, else its agent stops it within a heartbeat.

    Its submitter or an org admin; 409 for a job that has already ended.
    """
    job = _visible_job(plane, principal, job_id)
    if not principal.org_admin and (
        principal.user.agent_site is not None or job.submitted_by != principal.user.name
    ):
        raise PermissionDeniedError(
            f"job {job_id} is {job.submitted_by}'s", hint="Ask them or an org admin to cancel it."
        )
    return JobOut.of(_store(plane).cancel(job_id, now=plane.clock.now()))


def _log_file(plane: ControlPlane, job_id: int, attempt: int) -> FsPath:
    return plane.hub.settings.home / "job-logs" / str(job_id) / f"attempt-{attempt}.log"


@router.get(
    "/jobs/{job_id}/log",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def read_log(
    job_id: JobId,
    principal: User,
    plane: Plane,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    """The latest attempt's log from byte ``offset`` (up to 4 MiB).

    Headers: ``X-Log-Size`` (the log's size now) and ``X-Job-State``. To follow,
    ask again from ``offset + len(body)`` until the state is final and the
    offset has reached the size.
    """
    job = _visible_job(plane, principal, job_id)
    path = _log_file(plane, job_id, job.attempt)
    if not path.exists() and job.workdir is not None:
        # A direct-mode agent on this machine writes the log where the server can read it.
        path = FsPath(job.workdir) / "job.log"
    data, size = b"", 0
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(min(offset, size))
            data = f.read(LOG_CHUNK)
    except FileNotFoundError:
        pass  # not started yet, or it wrote nothing: an empty log so far
    return Response(
        content=data,
        media_type="application/octet-stream",
        headers={"X-Log-Size": str(size), "X-Job-State": job.state},
    )


# -- what agents report ------------------------------------------------------------------


@router.post("/scheduler/pass", response_model=PassOut)
def scheduler_pass(body: PassIn, principal: User, plane: Plane) -> PassOut:
    """One scheduler pass, as every agent runs: requeue jobs whose worker went silent
    (``stale_after_seconds``), fail the overdue, admit the queued. Safe to run anywhere at
    once (compare-and-swap in the catalog)."""
    if principal.user.agent_site is None and not principal.org_admin:
        raise PermissionDeniedError(
            "only site agents (and org admins) run scheduler passes",
            hint="Jobs are placed at submit and by the agents' passes; nothing to do.",
        )
    store, now = _store(plane), plane.clock.now()
    moved: list[tuple[int, str]] = []
    if body.stale_after_seconds is not None:
        moved = store.requeue_stale(
            now=now, stale_after=timedelta(seconds=body.stale_after_seconds)
        )
    return PassOut(
        moved=[MovedJob(id=i, state=state) for i, state in moved], placed=store.schedule(now=now)
    )


@router.get("/sites/{site}/placed-jobs", response_model=list[JobOut])
def placed_jobs(
    site: Name,
    principal: User,
    plane: Plane,
    backend: Annotated[list[str] | None, Query(max_length=16)] = None,
) -> list[JobOut]:
    """Jobs placed on the site's compute of ``backend`` (repeatable), waiting to start."""
    if not principal.org_admin and principal.user.agent_site != site:
        raise PermissionDeniedError(
            f"only site {site!r}'s agent (or an org admin) takes its jobs",
            hint="Run the agent as that site's agent user.",
        )
    store, now = _store(plane), plane.clock.now()
    # An agent's poll for its jobs is its job runner's sign of life (agent-down policies).
    store.runner_seen(f"{principal.user.name}/{site}", site, now=now)
    return [JobOut.of(j) for j in store.placed_at(site, backend or ["local"])]


@router.post("/jobs/{job_id}/claim", response_model=ClaimJobOut)
def claim_job(job_id: JobId, body: ClaimJobIn, principal: User, plane: Plane) -> ClaimJobOut:
    """Start a placed job: ``token`` is the attempt's fencing token (null: another agent
    took it). The server asks for the caches of its ``cached`` inputs at the job's site
    and mints ``job_token``, which the job gets as LAKECACHE_TOKEN (never the agent's).

    Sent again by the worker that won it (the job runs attempt ``attempt + 1`` under
    this very worker name, which each runner makes its own), the same token and a new
    job token: the first answer was lost."""
    job = _worked_job(plane, principal, job_id)
    store, now = _store(plane), plane.clock.now()
    worker = _worker_prefix(principal) + body.worker
    token = store.claim(replace(job, attempt=body.attempt), worker, now=now)
    if token is None:
        # This worker's claim sent again (its answer was lost): the attempt it started.
        job = store.get_job(job_id)
        if job.state != "running" or job.attempt != body.attempt + 1 or job.worker != worker:
            return ClaimJobOut(token=None)
        token = job.attempt
    for spec in job.inputs:
        if spec.mode != "cached" or job.site is None:
            continue
        try:
            # The agent user may fill its site's caches but not ask for new ones.
            plane.caches().request(spec.dataset, spec.commit_id, site=job.site)
        except LakecacheError as exc:
            # The runner finds no cache and fails the attempt with the reason.
            log.warning("job %d: no cache of %s at %s: %s", job_id, spec.dataset, job.site, exc)
    secret = JobTokens(plane.hub.catalog).mint(job_id, token, now=now)
    return ClaimJobOut(token=token, job_token=secret)


@router.post("/jobs/{job_id}/heartbeat", response_model=BeatOut)
def heartbeat_job(job_id: JobId, body: FencedIn, principal: User, plane: Plane) -> BeatOut:
    """The attempt is alive: ``run`` (carry on) or ``cancel`` (stop it: it was cancelled).
    409 ``taken_over`` when the token is stale: stop, report nothing."""
    job = _claimed(plane, principal, job_id, body.token)
    verdict = _store(plane).heartbeat(job_id, body.token, now=plane.clock.now())
    if verdict == "lost":
        raise _stale(job, body.token)
    return BeatOut(verdict="cancel" if verdict == "cancel" else "run")


@router.post("/jobs/{job_id}/events", status_code=204, response_class=Response)
def add_event(job_id: JobId, body: EventIn, principal: User, plane: Plane) -> Response:
    """Add to the attempt's timeline (``preparing``, ``data ready``, ``started``...).

    With a ``key`` (the runner's own, unique per job), the same entry sent again is
    written once: a second send with a key already on the job writes nothing (204)."""
    job = _claimed(plane, principal, job_id, body.token)
    if not _store(plane).record(
        job_id,
        body.token,
        body.kind,
        body.detail,
        now=plane.clock.now(),
        workdir=body.workdir,
        key=body.key,
    ):
        raise _stale(job, body.token)
    return Response(status_code=204)


@router.post("/jobs/{job_id}/finish", response_model=JobOut)
def finish_job(job_id: JobId, body: FinishIn, principal: User, plane: Plane) -> JobOut:
    """The attempt ended: ``succeeded``, ``failed`` or ``cancelled``; frees its slot.

    Sent again once it ended so (same state and exit code, by its worker), the job as
    the first send left it; 409 ``taken_over`` otherwise for an attempt not running."""
    store = _store(plane)
    try:
        job = _claimed(plane, principal, job_id, body.token)
        if not store.finish(
            job_id,
            body.token,
            state=body.state,
            exit_code=body.exit_code,
            reason=body.reason,
            now=plane.clock.now(),
        ):
            raise _stale(job, body.token)
    except TakenOverError:
        if not _ended_as(plane, principal, job_id, body.token, body.state, body.exit_code):
            raise
    return JobOut.of(store.get_job(job_id))


@router.post("/jobs/{job_id}/release", response_model=JobOut)
def release_job(job_id: JobId, body: ReleaseIn, principal: User, plane: Plane) -> JobOut:
    """Give the attempt back unfinished (its agent stops): requeued, or failed if last."""
    job = _claimed(plane, principal, job_id, body.token)
    store = _store(plane)
    if not store.release(job_id, body.token, reason=body.reason, now=plane.clock.now()):
        raise _stale(job, body.token)
    return JobOut.of(store.get_job(job_id))


@router.put(
    "/jobs/{job_id}/log",
    response_model=LogWritten,
    openapi_extra={
        "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
    },
)
async def write_log(
    job_id: JobId,
    request: Request,
    principal: User,
    plane: Plane,
    token: Annotated[int, Query(ge=1, le=2**31)],
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> LogWritten:
    """The attempt's log from byte ``offset`` (the body, up to 4 MiB). Sending the same
    range again is harmless; an offset past the end is refused (409), with the size.

    Accepted from the attempt that runs, and from the attempt that just ended (its last
    bytes come after its end); never from an older one (409 ``taken_over``).
    """
    job = _reported_job(plane, principal, job_id, token)
    mine = (
        principal.org_admin
        or (job.worker is None)
        or (job.worker or "").startswith(_worker_prefix(principal))
    )
    if job.attempt != token or not mine or (job.state != "running" and not job.done):
        raise _stale(job, token)
    data = await read_body(request, LOG_CHUNK, "a log chunk", hint="Send it in parts.")
    path = _log_file(plane, job_id, token)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as f:
        size = os.fstat(f.fileno()).st_size
        if offset > size:
            raise ConflictError(
                f"the log of job {job_id} has {size} bytes; cannot write from {offset}",
                hint=f"Send it again from byte {size}.",
            )
        f.truncate(offset)  # a resent range replaces what it covered
        f.seek(offset)
        f.write(data)
        return LogWritten(size=offset + len(data))


# -- outputs ---------------------------------------------------------------------------


@router.get("/jobs/{job_id}/outputs", response_model=list[OutputOut])
def list_outputs(job_id: JobId, principal: User, plane: Plane) -> list[OutputOut]:
    """The files of the job's collected outputs, by path (empty until an attempt ended)."""
    _visible_job(plane, principal, job_id)
    return [OutputOut.of(f) for f in _store(plane).outputs(job_id)]


@router.get(
    "/jobs/{job_id}/outputs/{path:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def read_output(
    job_id: JobId,
    path: Annotated[str, Path(min_length=1, max_length=4096)],
    principal: User,
    plane: Plane,
) -> StreamingResponse:
    """The bytes of one output file, streamed from the lake (``X-Digest``: its BLAKE3, which
    the client checks)."""
    _visible_job(plane, principal, job_id)
    found = {f.path: f for f in _store(plane).outputs(job_id)}.get(path)
    if found is None:
        raise NotFoundError(
            f"job {job_id} has no output {path!r}",
            hint=f"List them with `lakecache job outputs {job_id}`.",
        )
    loc = plane.hub.catalog.locate_blobs([found.digest]).get(found.digest)
    if loc is None:
        raise NotFoundError(
            f"output {path!r} of job {job_id}: its blob is not in the lake's index",
            hint="The lake lost it (a garbage collection?); run the job again.",
        )
    chunks = plane.hub.lake.iter_chunks(loc.key, loc.offset, loc.size)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={"X-Digest": found.digest, "Content-Length": str(found.size)},
    )


@router.put(
    "/jobs/{job_id}/outputs",
    response_model=OutputsStored,
    openapi_extra={
        "requestBody": {"content": {"application/x-tar": {"schema": {"type": "string"}}}}
    },
    responses={
        413: {"model": ErrorBody, "description": "Over the server's max_output_bytes"},
        507: {"model": ErrorBody, "description": "Not enough free space on the server's disk"},
    },
)
async def store_outputs(
    job_id: JobId,
    request: Request,
    principal: User,
    plane: Plane,
    token: Annotated[int, Query(ge=1, le=2**31)],
) -> OutputsStored:
    """Store attempt ``token``'s outputs: the body is a tar stream of its outputs folder.
    Regular files only are kept, under normalised names (links, devices, absolute names
    and ``..`` are left out and named); their bytes go to the lake, packed and
    content-addressed, and the list replaces the job's outputs.

    Sent with the job's own token (its attempt ``token``, running; a job token may
    write its own job's outputs and nothing else), or by the agent that claimed
    the attempt. 409 ``taken_over`` for an attempt that is not the running one.
    At most the server's ``max_output_bytes`` (413 over it: at once for a larger
    ``Content-Length``, else when the body passes it); 507 without room on the
    server's disk. Nothing of a refused body is kept.
    """
    if principal.job is not None:
        if principal.job.job_id != job_id:
            raise PermissionDeniedError(
                f"this is the token of job {principal.job.job_id}: it writes that job's "
                "outputs only",
                hint="Each job's outputs are sent with that job's own token.",
            )
        job = _store(plane).get_job(job_id)
        if principal.job.attempt != token or job.state != "running" or job.attempt != token:
            raise _stale(job, token)
    else:
        job = await run_in_threadpool(_claimed, plane, principal, job_id, token)
    spool_root = plane.hub.settings.home / "job-outputs-tmp"
    spool_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spool_root, prefix=f"{job_id}-{token}-") as tmp:
        tar_path = FsPath(tmp) / "outputs.tar"
        # Room for the tar, then its unpacked files: twice its size, while both exist.
        await spool_body(
            request,
            tar_path,
            plane.hub.settings.max_output_bytes,
            f"the outputs of job {job_id}",
            room_factor=2,
        )
        stored = await run_in_threadpool(_store_outputs, plane, job, token, tar_path, FsPath(tmp))
    return stored


def _store_outputs(
    plane: ControlPlane, job: JobRecord, token: int, tar_path: FsPath, tmp: FsPath
) -> OutputsStored:
    import tarfile

    from lakecache.compute.outputs import unpack_tar, upload_outputs

    try:
        with open(tar_path, "rb") as f:
            scan = unpack_tar(f, tmp / "outputs", max_bytes=plane.hub.settings.max_output_bytes)
    except tarfile.TarError as exc:
        raise UserError(
            f"the outputs of job {job.id} are not a readable tar stream: {exc}",
            hint="Send the outputs folder as an uncompressed tar.",
        ) from None
    hub = plane.hub
    manifest, files = upload_outputs(
        scan, lake=hub.lake, catalog=hub.catalog, settings=hub.settings
    )
    if not _store(plane).record_outputs(
        job.id, token, manifest=manifest, files=files, now=plane.clock.now()
    ):
        raise _stale(_store(plane).get_job(job.id), token)
    return OutputsStored(
        manifest=manifest,
        files=[OutputOut.of(f) for f in files],
        left_out=[f"{p} ({why})" for p, why in scan.left_out],
    )
