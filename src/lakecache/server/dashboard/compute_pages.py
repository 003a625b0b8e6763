"""The dashboard's compute pages: capacity per site and resource, the jobs list, a job.

::

    /compute              per site and compute resource: capacity used and free (cpu,
                          memory, gpu, named resources), templates, queues, and the
                          queued and running jobs; ``dashboard.js`` polls /compute/live
    /compute/live         that page's figures as JSON (the same view, for the script)
    /jobs?state=&queue=   jobs, newest first, filtered by state and queue
    /jobs/{id}            a job: timeline, where it was placed and why (each template's
                          verdict), inputs, outputs, attempts, its log (live), cancel
    /jobs/{id}/live       that page's changing parts as JSON

Every figure comes from the compute API's route functions
(:mod:`lakecache.server.routes.jobs`) called with the viewer's principal, so
a page shows what the API gives the same person: your own jobs (org admins:
everyone's; a site's agent: its site's), and the same 404 for another
person's job as for one that does not exist. Cancelling is the API's
``POST /api/v1/jobs/{id}/cancel``, sent by ``dashboard.js`` with the
session's CSRF token; the button is shown only to those the API lets cancel.
A running job's own token opens none of these pages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import select
from starlette.responses import JSONResponse, Response

from lakecache.catalog import topology_tables as tt
from lakecache.compute import tables as ct
from lakecache.compute.admission import RUNNER_SEEN_WITHIN
from lakecache.compute.model import FINAL_STATES
from lakecache.compute.store import ComputeStore
from lakecache.errors import UserError
from lakecache.server.auth import Plane, Principal, authenticate
from lakecache.server.dashboard import render
from lakecache.server.dashboard.pages import Viewer, _render
from lakecache.server.errors import AuthenticationError, PermissionDeniedError
from lakecache.server.job_models import CapacityOut, JobOut, JobState, SizeIO, TemplateOut
from lakecache.server.pagination import MAX_PAGE_SIZE, PageRequest, encode_cursor
from lakecache.server.routes import jobs as jobs_api
from lakecache.server.routes import topology as topology_api
from lakecache.server.runtime import ControlPlane

router = APIRouter(include_in_schema=False)

#: Jobs per page of the jobs list.
JOBS_PAGE = 50
#: States of a job that is waiting for, or holding, a slot.
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "placed", "running")
STATES: tuple[JobState, ...] = ("queued", "placed", "running", "succeeded", "failed", "cancelled")
#: How often the pages' script asks for fresh figures (milliseconds).
POLL_MS = 1000

JobId = Annotated[int, Path(ge=1, le=2**62)]
#: Everything in one page (what the API calls its largest page).
_ALL = PageRequest(MAX_PAGE_SIZE, None)


def _no_job_tokens(v: Viewer) -> None:
    """A running job's token reads its inputs through the API, and opens no page."""
    if v.principal.job is not None:
        raise PermissionDeniedError(
            f"this is the token of job {v.principal.job.job_id}: it opens no dashboard page",
            hint="Log in as yourself to see jobs.",
        )


# --- capacity ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One bar of a compute resource: how much of one kind of resource its jobs hold."""

    key: str  # cpu | memory | gpu | res-<name>
    label: str
    used_pct: float | int
    free_pct: float | int
    used: str
    free: str
    total: str
    #: For screen readers and the bar's title: "1.5 of 4 cores used, 2.5 free".
    text: str


def _limit(seconds: int | None) -> str:
    return "none" if seconds is None else render.duration(seconds)


def _whole(pct: float) -> float | int:
    """``100`` rather than ``100.0``: the page and the script then write it alike."""
    return int(pct) if pct.is_integer() else pct


def _cores(milli: int) -> str:
    return f"{milli / 1000:g}"


def dimensions(cap: CapacityOut) -> list[Dimension]:
    """The bars of one resource: cpu and memory always, gpu and each named resource when
    the resource has (or its jobs hold) some."""
    rows: list[tuple[str, str, int, int, int, Any]] = [
        ("cpu", "CPU", cap.used.cpu_milli, cap.free.cpu_milli, cap.total.cpu_milli, _cpu_text),
        ("memory", "Memory", cap.used.memory, cap.free.memory, cap.total.memory, render.size),
    ]
    if cap.total.gpu or cap.used.gpu:
        rows.append(("gpu", "GPU", cap.used.gpu, cap.free.gpu, cap.total.gpu, render.number))
    names = sorted(set(cap.total.resources) | set(cap.used.resources))
    for name in names:
        rows.append(
            (
                f"res-{name}",
                name,
                cap.used.resources.get(name, 0),
                cap.free.resources.get(name, 0),
                cap.total.resources.get(name, 0),
                render.number,
            )
        )
    out = []
    for key, label, used, free, total, fmt in rows:
        out.append(
            Dimension(
                key=key,
                label=label,
                used_pct=_whole(render.percent(used, total)),
                free_pct=_whole(round(100.0 - render.percent(used, total), 1)),
                used=fmt(used),
                free=fmt(free),
                total=fmt(total),
                text=f"{label}: {fmt(used)} of {fmt(total)} used, {fmt(free)} free",
            )
        )
    return out


def _cpu_text(milli: int) -> str:
    cores = _cores(milli)
    return f"{cores} core" + ("" if cores == "1" else "s")


def _size_text(size: SizeIO) -> str:
    parts = [_cpu_text(size.cpu_milli), render.size(size.memory)]
    if size.gpu:
        parts.append(f"{size.gpu} GPU" + ("" if size.gpu == 1 else "s"))
    parts += [f"{k} {n}" for k, n in sorted(size.resources.items())]
    return ", ".join(parts)


@dataclass(frozen=True)
class JobRow:
    """A job as the lists show it."""

    id: int
    href: str
    state: str
    queue: str
    where: str
    command: str
    submitted_by: str
    created: str
    age: str


def _where(job: JobOut) -> str:
    if job.template is None:
        return "–"
    return f"{job.template} ({job.compute} at {job.site})"


def _command(job: JobOut, limit: int = 120) -> str:
    text = " ".join(job.command)
    if job.image:
        text = f"[{job.image}] {text}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_row(job: JobOut, now: datetime) -> JobRow:
    return JobRow(
        id=job.id,
        href=f"/jobs/{job.id}",
        state=job.state,
        queue=job.queue,
        where=_where(job),
        command=_command(job),
        submitted_by=job.submitted_by,
        created=render.iso(job.created_at),
        age=render.ago(job.created_at, now),
    )


def compute_view(v: Viewer) -> dict[str, Any]:
    """What the compute page shows, as plain data: the page renders it, /compute/live
    sends it to the script."""
    _no_job_tokens(v)
    caps = {c.compute: c for c in jobs_api.capacity(v.principal, v.plane)}
    templates = jobs_api.list_templates(v.principal, v.plane)
    queues = jobs_api.list_queues(v.principal, v.plane)
    active = jobs_api.list_jobs(v.principal, v.plane, _ALL, list(ACTIVE_STATES), None, None)
    sites = topology_api.list_sites(v.principal, v.plane, _ALL).items
    compute = topology_api.list_compute(v.principal, v.plane, _ALL, None).items
    now = v.plane.clock.now()
    by_template = {t.name: t for t in templates}
    seen = ComputeStore(v.plane.hub.catalog).runners_seen()
    out_sites = []
    for s in sites:
        resources = []
        for c in compute:
            if c.site != s.name:
                continue
            cap = caps.get(c.name)
            resources.append(
                {
                    "name": c.name,
                    "backend": c.backend,
                    "capacity_set": cap is not None,
                    "jobs": cap.jobs if cap else 0,
                    "dims": [asdict(d) for d in dimensions(cap)] if cap else [],
                    "templates": [_template(t) for t in templates if t.compute == c.name],
                }
            )
        out_sites.append(
            {
                "name": s.name,
                "description": s.description,
                "resources": resources,
                "agent": _agent(seen.get(s.name), now) if resources else None,
            }
        )
    return {
        "sites": out_sites,
        "queues": [
            {
                "name": q.name,
                "policy": q.policy,
                "deadline": (
                    "none"
                    if q.pending_deadline_seconds is None
                    else render.duration(q.pending_deadline_seconds)
                ),
                "templates": [
                    {
                        "name": name,
                        "where": (
                            f"{by_template[name].compute} at {by_template[name].site}"
                            if name in by_template
                            else "–"
                        ),
                    }
                    for name in q.templates
                ],
                "time_limit": _limit(q.job_timeout_seconds),
                "agent_down": q.agent_down,
                "queued": q.queued,
                "running": q.running,
            }
            for q in queues
        ],
        "jobs": [asdict(job_row(j, now)) for j in reversed(active.items)],
        "jobs_total": active.total or 0,
        "poll_ms": POLL_MS,
    }


def _agent(seen: datetime | None, now: datetime) -> dict[str, Any]:
    """Whether the site's job agent is up: it says so on every pass."""
    if seen is not None and now - seen <= RUNNER_SEEN_WITHIN:
        return {"up": True, "text": f"Job agent up (last pass {render.ago(seen, now)})"}
    when = "never seen" if seen is None else f"last seen {render.ago(seen, now)}"
    return {
        "up": False,
        "text": f"No job agent ({when}): jobs placed here wait for one, or move on to the "
        "next template where their queue says so",
    }


def _template(t: TemplateOut) -> dict[str, Any]:
    return {"name": t.name, "size": _size_text(t.size), "image": t.image or "–"}


@router.get("/compute")
def compute_page(request: Request, plane: Plane) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        return "compute.html", {
            "title": "Compute",
            "section": "compute",
            "c": compute_view(v),
        }

    return _render(request, plane, view)


def _json_viewer(request: Request, plane: ControlPlane) -> Viewer:
    """The caller of a /live endpoint: 401 (as JSON) without a session, as the API does."""
    principal = authenticate(request, plane)
    if principal is None:
        raise AuthenticationError("log in first", hint="Open /login and log in.")
    return Viewer(principal, plane)


def _json(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


@router.get("/compute/live")
def compute_live(request: Request, plane: Plane) -> JSONResponse:
    return _json(compute_view(_json_viewer(request, plane)))


# --- the jobs list -------------------------------------------------------------------------


@router.get("/jobs")
def jobs_page(
    request: Request,
    plane: Plane,
    state: Annotated[str | None, Query(max_length=16)] = None,
    queue: Annotated[str | None, Query(max_length=64)] = None,
    page: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        _no_job_tokens(v)
        wanted = (state or "").strip()
        if wanted and wanted != "active" and wanted not in STATES:
            raise UserError(
                f"no job state {wanted!r}",
                hint=f"Pick one of: active, {', '.join(STATES)} (or none for every job).",
            )
        states: list[JobState] | None = None
        if wanted == "active":
            states = list(ACTIVE_STATES)
        elif wanted:
            states = [s for s in STATES if s == wanted]
        name = (queue or "").strip() or None
        # Newest first: the API lists oldest first, so this page is read from the end.
        total = (
            jobs_api.list_jobs(v.principal, v.plane, PageRequest(1, None), states, name, None).total
            or 0
        )
        end = max(0, total - page * JOBS_PAGE)
        start = max(0, end - JOBS_PAGE)
        items: list[JobOut] = []
        if end > start:
            cursor = encode_cursor({"o": start}) if start else None
            got = jobs_api.list_jobs(
                v.principal, v.plane, PageRequest(end - start, cursor), states, name, None
            )
            items = list(reversed(got.items))
        now = v.plane.clock.now()
        query = {k: val for k, val in (("state", wanted), ("queue", name or "")) if val}
        older = "/jobs?" + urlencode({**query, "page": page + 1}) if start > 0 else None
        newer = None
        if page > 0:
            back = {**query, "page": page - 1} if page > 1 else query
            newer = "/jobs" + (f"?{urlencode(back)}" if back else "")
        return "jobs.html", {
            "title": "Jobs",
            "section": "jobs",
            "jobs": [job_row(j, now) for j in items],
            "total": total,
            "state": wanted,
            "queue": name or "",
            "states": STATES,
            "queues": [q.name for q in jobs_api.list_queues(v.principal, v.plane)],
            "older": older,
            "newer": newer,
            "first": total - end + 1 if items else 0,
            "last": total - start,
        }

    return _render(request, plane, view)


# --- one job -------------------------------------------------------------------------------


def _clock(value: datetime | None) -> str:
    when = render.parse_time(value)
    return "–" if when is None else when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _since(value: datetime, origin: datetime) -> str:
    seconds = (value - origin).total_seconds()
    if seconds < 60:
        return f"+{seconds:.2f} s"
    return f"+{render.duration(seconds)}"


def _ran_for(job: JobOut, started: datetime | None) -> str:
    """How long the job ran, from its last start to its end (once it has ended)."""
    if started is None or job.state not in FINAL_STATES:
        return "–"
    return _since(job.updated_at, started).lstrip("+")


def _attempts(plane: ControlPlane, job_id: int) -> list[dict[str, Any]]:
    """The job's attempts: who ran each, where, when, and how it ended (read only)."""
    a, c = ct.compute_job_attempts, tt.compute_resources
    query = (
        select(a.c.number, a.c.worker, a.c.started_at, a.c.ended_at, a.c.exit_code, a.c.outcome)
        .add_columns(c.c.name.label("compute"))
        .outerjoin(c, c.c.id == a.c.compute_id)
        .where(a.c.job_id == job_id)
        .order_by(a.c.number)
    )
    with plane.hub.catalog._read() as conn:
        rows = conn.execute(query).all()
    out = []
    for r in rows:
        took = None
        if r.ended_at is not None:
            took = (
                render.parse_time(r.ended_at) - render.parse_time(r.started_at)  # type: ignore[operator]
            ).total_seconds()
        out.append(
            {
                "number": int(r.number),
                "worker": r.worker,
                "compute": r.compute or "–",
                "started": _clock(r.started_at),
                "ended": _clock(r.ended_at) if r.ended_at else "running",
                "took": "–" if took is None else f"{took:.2f} s",
                "exit_code": "–" if r.exit_code is None else str(r.exit_code),
                "outcome": r.outcome or "running",
            }
        )
    return out


def _can_cancel(principal: Principal, job: JobOut) -> bool:
    """What ``POST /jobs/{id}/cancel`` allows: an org admin, or the submitter (not as an
    agent), while the job has not ended."""
    if job.state in FINAL_STATES:
        return False
    if principal.org_admin:
        return True
    return principal.user.agent_site is None and job.submitted_by == principal.user.name


def job_view(v: Viewer, job_id: int) -> tuple[JobOut, dict[str, Any]]:
    """A job (404 unless the API shows it to the viewer) and its page's changing parts."""
    _no_job_tokens(v)
    job = jobs_api.show_job(job_id, v.principal, v.plane)
    events = job.timeline or []
    origin = events[0].at if events else job.created_at
    started = next((e.at for e in reversed(events) if e.kind == "started"), None)
    return job, {
        "id": job.id,
        "state": job.state,
        "done": job.state in FINAL_STATES,
        "can_cancel": _can_cancel(v.principal, job),
        "cancel_requested": job.cancel_requested,
        "summary": {
            "queue": job.queue,
            "where": _where(job),
            "request": _size_text(job.request),
            "slot": _size_text(job.slot) if job.template else "–",
            "attempt": f"{job.attempt} of {job.max_attempts}",
            "exit_code": "–" if job.exit_code is None else str(job.exit_code),
            "reason": job.reason or "–",
            "worker": job.worker or "–",
            "submitted": _clock(job.created_at),
            "updated": _clock(job.updated_at),
            "ran_for": _ran_for(job, started),
            "time_limit": _limit(job.timeout_seconds),
        },
        "timeline": [
            {
                "at": render.iso(e.at),
                "when": _clock(e.at),
                "since": _since(e.at, origin),
                "kind": e.kind,
                "detail": e.detail,
                "attempt": e.attempt,
            }
            for e in events
        ],
        "placement": [
            {
                "template": p.template,
                "site": p.site,
                "verdict": p.verdict,
                "detail": p.detail,
                "chosen": p.verdict == "chosen",
            }
            for p in job.placement
        ],
        "attempts": _attempts(v.plane, job.id),
        "outputs": _outputs(v, job),
        "poll_ms": POLL_MS,
    }


def _outputs(v: Viewer, job: JobOut) -> dict[str, Any]:
    """The files of the job's collected outputs (the API's list), each with its download."""
    files = jobs_api.list_outputs(job.id, v.principal, v.plane)
    total = sum(f.size for f in files)
    return {
        "files": [
            {
                "path": f.path,
                "size": render.size(f.size),
                "digest": f.digest[:12],
                "href": f"/api/v1/jobs/{job.id}/outputs/{render.urlpath(f.path)}",
            }
            for f in files
        ],
        "summary": (
            f"{len(files):,} file{'' if len(files) == 1 else 's'}, {render.size(total)}"
            if files
            else ("The job wrote no outputs." if job.state in FINAL_STATES else "")
        ),
    }


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: JobId, plane: Plane) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        job, live = job_view(v, job_id)
        return "job.html", {
            "title": f"Job {job.id}",
            "section": "jobs",
            "job": job,
            "live": live,
            "inputs": [
                {
                    "name": i.name,
                    "dataset": i.dataset,
                    "ref": i.ref,
                    "commit": i.commit_id,
                    "mode": i.mode,
                    "href": f"/datasets/{quote(i.dataset, safe='')}/tree/{i.commit_id}",
                    "dataset_href": f"/datasets/{quote(i.dataset, safe='')}",
                }
                for i in job.inputs
            ],
            "command": " ".join(job.command),
        }

    return _render(request, plane, view)


@router.get("/jobs/{job_id}/live")
def job_live(request: Request, job_id: JobId, plane: Plane) -> JSONResponse:
    _, live = job_view(_json_viewer(request, plane), job_id)
    return _json(live)
