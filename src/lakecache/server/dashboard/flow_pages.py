"""The dashboard's flow pages: the runs list and a run's DAG, with states updating live.

::

    /flows                 flow runs, newest first: state, tasks by state, who, when
    /flows/{id}            a run: its DAG drawn as columns by depth (a task's column is one
                           more than its deepest upstream task's), each node with its
                           state, timings, tries, whether it reused an earlier run's
                           outputs, and links to its job (/jobs/ID) and tracked run
                           (/runs/ID); cancel and resume buttons
    /flows/{id}/live       that page's changing parts as JSON (``dashboard.js`` polls it)

The DAG is laid out by CSS grid (a column per depth), and ``dashboard.js``
draws the edges as SVG lines between the nodes' boxes, so the page needs no
script of its own under the strict CSP. Every figure comes from the flow API's
route functions called with the viewer's principal: your own runs (org admins:
everyone's), the same 404 for another person's run as for none.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import select
from starlette.responses import JSONResponse, Response

from lakecache.server.auth import Plane, authenticate
from lakecache.server.dashboard import render
from lakecache.server.dashboard.pages import Viewer, _render
from lakecache.server.errors import AuthenticationError
from lakecache.server.pagination import PageRequest
from lakecache.server.routes import flows as flows_api
from lakecache.server.runtime import ControlPlane

router = APIRouter(include_in_schema=False)

RunId = Annotated[int, Path(ge=1, le=2**62)]
#: How often the run page asks for fresh states (milliseconds).
POLL_MS = 1000
#: Runs per page of the list.
RUNS_PAGE = 50
#: Edges drawn at most (a fan-out of thousands still shows its nodes; lines would be noise).
MAX_EDGES = 3000
STATES = ("running", "succeeded", "failed", "cancelled")


def _took(start: str | None, end: str | None, now: datetime) -> str:
    if start is None:
        return ""
    t0 = datetime.fromisoformat(start)
    t1 = datetime.fromisoformat(end) if end else now
    return render.duration((t1 - t0).total_seconds())


def _tracked_runs(plane: ControlPlane, job_ids: list[int]) -> dict[int, int]:
    """Job id -> the tracked run of its latest attempt, where tracking recorded one."""
    if not job_ids:
        return {}
    try:
        from lakecache.tracking import tables as tr
    except ImportError:  # pragma: no cover - tracking is part of the package
        return {}
    out: dict[int, int] = {}
    with plane.hub.catalog._read() as conn:
        for start in range(0, len(job_ids), 500):
            rows = conn.execute(
                select(tr.tracking_runs.c.id, tr.tracking_runs.c.job_id)
                .where(tr.tracking_runs.c.job_id.in_(job_ids[start : start + 500]))
                .order_by(tr.tracking_runs.c.id)
            )
            for run_id, job_id in rows:
                out[int(job_id)] = int(run_id)
    return out


def run_view(v: Viewer, run_id: int) -> dict[str, Any]:
    """What the run page shows, as plain data: the page renders it, /live sends it."""
    data = flows_api.show_run(run_id, v.principal, v.plane)
    now = datetime.now(UTC)
    tracked = _tracked_runs(v.plane, [t["job_id"] for t in data["tasks"] if t["job_id"]])
    levels: list[list[dict[str, Any]]] = []
    edges: list[list[str]] = []
    for t in data["tasks"]:
        node = {
            "id": t["id"],
            "name": t["name"],
            "state": t["state"],
            "depth": t["depth"],
            "job": t["job_id"],
            "job_href": f"/jobs/{t['job_id']}" if t["job_id"] else None,
            "run_href": f"/runs/{tracked[t['job_id']]}" if t["job_id"] in tracked else None,
            "tries": t["tries"],
            "took": _took(t["started_at"], t["ended_at"], now) if t["started_at"] else "",
            "reused": t["reused_from"],
            "reason": t["reason"] or "",
            "deps": t["deps"],
            "memo": t["memo"],
        }
        while len(levels) <= t["depth"]:
            levels.append([])
        levels[t["depth"]].append(node)
        for d in t["deps"]:
            if len(edges) < MAX_EDGES:
                edges.append([d, t["name"]])
    counts = data["counts"]
    return {
        "id": data["id"],
        "flow": data["flow"],
        "state": data["state"],
        "reason": data["reason"] or "",
        "submitted_by": data["submitted_by"],
        "code_version": data["code_version"],
        "params": data["params"],
        "created": data["created_at"],
        "started": render.stamp(data["created_at"]),
        "took": _took(data["created_at"], data["ended_at"], now),
        "counts": ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        "total": sum(counts.values()),
        "levels": levels,
        "edges": edges,
        "done": data["state"] != "running",
        "can_cancel": data["state"] == "running",
        "can_resume": data["state"] in ("failed", "cancelled"),
    }


@router.get("/flows")
def flows_page(
    request: Request,
    plane: Plane,
    state: Annotated[str | None, Query(max_length=16)] = None,
    flow: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        wanted = state if state in STATES else None
        page = flows_api.list_runs(
            v.principal,
            v.plane,
            PageRequest(RUNS_PAGE, None),
            state=[wanted] if wanted else None,
            flow=flow or None,
        )
        now = datetime.now(UTC)
        runs = [
            {
                "id": r.id,
                "href": f"/flows/{r.id}",
                "flow": r.flow,
                "state": r.state,
                "counts": ", ".join(f"{n} {s}" for s, n in sorted(r.counts.items())),
                "by": r.submitted_by,
                "created": r.created_at,
                "age": render.ago(datetime.fromisoformat(r.created_at), now),
                "took": _took(r.created_at, r.ended_at, now),
            }
            for r in page.items
        ]
        return "flows.html", {
            "title": "Flows",
            "section": "flows",
            "runs": runs,
            "total": page.total,
            "state": wanted,
            "states": STATES,
            "flow": flow,
        }

    return _render(request, plane, view)


@router.get("/flows/{run_id}")
def flow_page(request: Request, plane: Plane, run_id: RunId) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        data = run_view(v, run_id)
        return "flow.html", {
            "title": f"Flow run {run_id}",
            "section": "flows",
            "run": data,
            "poll_ms": POLL_MS,
            "live": f"/flows/{run_id}/live",
        }

    return _render(request, plane, view)


@router.get("/flows/{run_id}/live")
def flow_live(request: Request, plane: Plane, run_id: RunId) -> JSONResponse:
    principal = authenticate(request, plane)
    if principal is None:
        raise AuthenticationError("log in first", hint="Open /login and log in.")
    data = run_view(Viewer(principal, plane), run_id)
    return JSONResponse(data, headers={"Cache-Control": "no-store"})
