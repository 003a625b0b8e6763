"""Every dashboard route, as every kind of caller: pages and their data routes (the
``/live`` JSON the pages poll, a run's series, CSV, artifacts, logs and code diff) are
authorised exactly like the API behind them.

Callers: anonymous, nora (logged in, no role on ``xray``, owns nothing), wendy
(writer of ``xray``, who owns the job, flow run, experiment and tracking runs
below), admin (org admin), agnes (the agent user of site ``local``) and the
running job's own token. Expected answers:

* anonymous: a page sends to ``/login`` (303); a data route answers 401 (JSON);
* nora: another user's job, flow run, experiment or tracking run gets 404, the
  same as one that does not exist, on its page and on every data route of it;
  a list page answers 200 and names none of them;
* the job's token opens no page and reads no dashboard data (403);
* agnes, no person, sees no one's jobs, runs or flows.

The last test checks that the table covers every dashboard route the app has, so a
route added later without a row fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from lakecache.compute.model import Resources
from lakecache.compute.store import ComputeStore
from server.live import PASSWORD, World

SITE = "local"
#: A name only wendy's things carry: a list page shown to someone else must not hold it.
MARK = "wendysecret"
ANON, NORA, WENDY, ADMIN, AGENT, JOB = None, "nora", "wendy", "admin", "agnes", "job"
CALLERS = [ANON, NORA, WENDY, ADMIN, AGENT, JOB]

FLOW = f"""\
name: {MARK}flow
tasks:
  a:
    command: "true"
    queue: q
"""


@dataclass
class Things:
    job: int
    flow: int
    experiment: int
    runs: list[int]
    job_token: str


@pytest.fixture(scope="module")
def dash_world(world_factory: Callable[..., World]) -> tuple[World, Things]:
    """A server without agents: wendy's job (claimed by agnes: it runs), her flow run, her
    experiment and two tracking runs, one with an artifact and a log."""
    w = world_factory(agents=False)
    plane, now = w.plane, w.plane.clock.now()
    plane.topology.add_compute("pool", SITE, "local", {}, [], now)
    store = ComputeStore(plane.hub.catalog)
    store.set_capacity("pool", Resources(4000, 10**10))
    store.add_template("t1", "pool", Resources(1000, 10**9), None, now)
    store.add_queue("q", ["t1"], now=now)
    plane.accounts.create_user(AGENT, PASSWORD, agent_site=SITE, now=now)
    _, w.tokens[AGENT] = plane.accounts.create_token(AGENT, "site", now=now, expires_at=None)

    def ok(r: Any, status: int = 201) -> Any:
        assert r.status_code == status, r.text
        return r.json()

    job = ok(
        w.call(
            WENDY,
            "POST",
            "/api/v1/jobs",
            json={"queue": "q", "command": ["echo", MARK], "request": {"cpu_milli": 1000}},
        )
    )
    claim = ok(
        w.call(
            AGENT, "POST", f"/api/v1/jobs/{job['id']}/claim", json={"worker": "w", "attempt": 0}
        ),
        200,
    )
    flow = ok(
        w.call(WENDY, "POST", "/api/v1/flows/runs", json={"source": FLOW, "source_name": "f.yaml"})
    )
    experiment = ok(
        w.call(WENDY, "POST", "/api/v1/tracking/experiments", json={"name": f"{MARK}exp"})
    )
    runs = []
    for i in range(2):
        run = ok(
            w.call(
                WENDY,
                "POST",
                "/api/v1/tracking/runs",
                json={"experiment": f"{MARK}exp", "name": f"{MARK}run{i}"},
            )
        )
        runs.append(run["id"])
    base = f"/api/v1/tracking/runs/{runs[0]}"
    ok(w.call(WENDY, "PUT", f"{base}/artifacts/a.txt", content=MARK.encode()), 200)
    ok(w.call(WENDY, "PUT", f"{base}/logs/output", content=f"{MARK}\n".encode()), 200)
    ok(
        w.call(
            WENDY,
            "POST",
            f"{base}/batch",
            json={"metrics": {"loss": [[0, 1], [0.0, 1.0], [1.0, 0.5]]}},
        ),
        200,
    )
    # A diff the server recorded for the run (set here as a tracking run's store does).
    from lakecache.tracking.objects import put_bytes
    from lakecache.tracking.store import TrackingStore

    digest = put_bytes(plane.hub.lake, f"+{MARK}\n".encode())
    TrackingStore(plane.hub.catalog).update_run(runs[0], code={"diff_digest": digest})
    return w, Things(job["id"], flow["id"], experiment["id"], runs, claim["job_token"])


def _call(w: World, t: Things, who: str | None, path: str) -> Any:
    headers = {"Authorization": f"Bearer {t.job_token}"} if who == JOB else {}
    with w.client(None if who in (ANON, JOB) else who) as c:
        return c.get(path, headers=headers, follow_redirects=False)


def _paths(t: Things) -> dict[str, str]:
    run = t.runs[0]
    return {
        "/login": "/login",
        "/": "/",
        "/datasets/{dataset}": "/datasets/xray",
        "/datasets/{dataset}/tree/{ref}": "/datasets/xray/tree/v1",
        "/datasets/{dataset}/tree/{ref}/{path:path}": "/datasets/xray/tree/v1/docs",
        "/datasets/{dataset}/diff": "/datasets/xray/diff?from=v1&to=latest",
        "/caches": "/caches",
        "/sites": "/sites",
        "/compute": "/compute",
        "/compute/live": "/compute/live",
        "/jobs": "/jobs",
        "/jobs/{job_id}": f"/jobs/{t.job}",
        "/jobs/{job_id}/live": f"/jobs/{t.job}/live",
        "/experiments": "/experiments",
        "/experiments/{experiment_id}": f"/experiments/{t.experiment}",
        "/runs": "/runs",
        "/runs/compare": f"/runs/compare?id={t.runs[0]}&id={t.runs[1]}",
        "/runs/{run_id}": f"/runs/{run}",
        "/runs/{run_id}/series": f"/runs/{run}/series?key=loss",
        "/runs/{run_id}/series.csv": f"/runs/{run}/series.csv?key=loss",
        "/runs/{run_id}/artifacts/{path:path}": f"/runs/{run}/artifacts/a.txt",
        "/runs/{run_id}/logs/{stream}": f"/runs/{run}/logs/output",
        "/runs/{run_id}/code.diff": f"/runs/{run}/code.diff",
        "/flows": "/flows",
        "/flows/{run_id}": f"/flows/{t.flow}",
        "/flows/{run_id}/live": f"/flows/{t.flow}/live",
    }


P, D = "page", "data"  # a page sends anonymous callers to /login; a data route says 401
#: template -> (kind, nora, wendy, admin, agnes); anonymous and the job's token follow from
#: the kind. nora's 200s are list pages, which must not name wendy's things.
ROWS: dict[str, tuple[str, int, int, int, int]] = {
    "/": (P, 200, 200, 200, 200),
    "/datasets/{dataset}": (P, 404, 200, 200, 404),
    "/datasets/{dataset}/tree/{ref}": (P, 404, 200, 200, 404),
    "/datasets/{dataset}/tree/{ref}/{path:path}": (P, 404, 200, 200, 404),
    "/datasets/{dataset}/diff": (P, 404, 200, 200, 404),
    "/caches": (P, 200, 200, 200, 200),
    "/sites": (P, 200, 200, 200, 200),
    # agnes works the jobs placed on her site, as through the API (checked below).
    "/compute": (P, 200, 200, 200, 200),
    "/compute/live": (D, 200, 200, 200, 200),
    "/jobs": (P, 200, 200, 200, 200),
    "/jobs/{job_id}": (P, 404, 200, 200, 200),
    "/jobs/{job_id}/live": (D, 404, 200, 200, 200),
    "/experiments": (P, 200, 200, 200, 200),
    "/experiments/{experiment_id}": (P, 404, 200, 200, 404),
    "/runs": (P, 200, 200, 200, 200),
    "/runs/compare": (P, 404, 200, 200, 404),
    "/runs/{run_id}": (P, 404, 200, 200, 404),
    "/runs/{run_id}/series": (D, 404, 200, 200, 403),
    "/runs/{run_id}/series.csv": (D, 404, 200, 200, 403),
    "/runs/{run_id}/artifacts/{path:path}": (D, 404, 200, 200, 403),
    "/runs/{run_id}/logs/{stream}": (D, 404, 200, 200, 403),
    "/runs/{run_id}/code.diff": (D, 404, 200, 200, 403),
    "/flows": (P, 200, 200, 200, 403),
    "/flows/{run_id}": (P, 404, 200, 200, 403),
    "/flows/{run_id}/live": (D, 404, 200, 200, 403),
}
#: Pages that are not the dashboard's data: the login form (logged in: moves on).
OTHER = {"/login"}


def expected(template: str) -> dict[str | None, int]:
    kind, nora, wendy, admin, agnes = ROWS[template]
    anon = 303 if kind == P else 401
    return {ANON: anon, NORA: nora, WENDY: wendy, ADMIN: admin, AGENT: agnes, JOB: 403}


@pytest.mark.parametrize("template", sorted(ROWS))
def test_each_dashboard_route_answers_each_caller_as_the_api_would(
    dash_world: tuple[World, Things], template: str
) -> None:
    w, t = dash_world
    path = _paths(t)[template]
    got, leaks = {}, []
    for who in CALLERS:
        r = _call(w, t, who, path)
        got[who] = r.status_code
        if r.status_code == 303:
            assert r.headers["location"].startswith("/login?next="), r.headers
        if r.status_code >= 400 and ROWS[template][0] == D:
            assert set(r.json()) == {"error"}  # the API's JSON error, never a page
        if MARK in r.text and who not in (WENDY, ADMIN):
            leaks.append(who)
    assert got == expected(template)
    # agnes sees the job her site runs, as the API shows it to her; nobody else sees any.
    allowed = [AGENT] if template.startswith(("/compute", "/jobs")) else []
    assert set(leaks) <= set(allowed), f"{template} names wendy's things to {leaks}"


def test_the_agent_sees_on_the_pages_what_the_api_shows_her(
    dash_world: tuple[World, Things],
) -> None:
    w, t = dash_world
    assert w.call(AGENT, "GET", f"/api/v1/jobs/{t.job}").status_code == 200
    listed = w.call(AGENT, "GET", "/api/v1/jobs").json()["items"]
    assert t.job in [j["id"] for j in listed]
    assert w.call(NORA, "GET", f"/api/v1/jobs/{t.job}").status_code == 404


def test_a_run_cannot_name_someone_elses_object_as_its_diff(
    dash_world: tuple[World, Things],
) -> None:
    """A digest is no capability: a run's ``code.diff_digest`` is the server's to set, or
    the dashboard would serve any tracking object (another user's artifact) by its digest."""
    from lakecache.tracking.objects import put_bytes

    w, _ = dash_world
    theirs = put_bytes(w.plane.hub.lake, b"nora's private artifact")
    r = w.call(NORA, "POST", "/api/v1/tracking/runs", json={"code": {"diff_digest": theirs}})
    assert r.status_code == 422 and "diff_digest" in r.json()["error"]["message"], r.text
    job_run = w.call(
        AGENT,
        "POST",
        "/api/v1/tracking/job-runs",
        json={"job_id": 1, "attempt": 1, "code": {"diff_digest": theirs}},
    )
    assert job_run.status_code == 422, job_run.text
    # The SDK's own shape (the diff inline) is taken as before.
    ok = w.call(NORA, "POST", "/api/v1/tracking/runs", json={"code": {"diff": "+x\n"}})
    assert ok.status_code == 201, ok.text


def test_the_table_covers_every_dashboard_route() -> None:
    from lakecache.server.dashboard import compute_router, flow_router, router, tracking_router

    routes = set()
    for r in (*router.routes, *compute_router.routes, *tracking_router.routes, *flow_router.routes):
        methods = getattr(r, "methods", set())
        assert methods <= {"GET", "HEAD"}, f"{r.path}: a dashboard route that changes things"
        routes.add(r.path)
    assert routes == set(ROWS) | OTHER
