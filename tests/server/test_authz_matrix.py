"""Every endpoint, as every kind of caller: each gets exactly what its role allows.

Callers: anonymous, nora (logged in, no role on ``xray``), rita (reader),
wendy (writer), alice (dataset admin), admin (org admin), and agnes, the agent
user of site ``local`` (where ``xray`` is cached). A row names the least a
person needs:

* ``public``: anyone, even without logging in;
* ``user``: anyone logged in;
* ``reader`` / ``writer`` / ``dsadmin``: that role on ``xray`` (or on the
  dataset the row creates);
* ``orgadmin``: org admins only.

Denied: 401 without credentials; 404 for a caller with no role on the dataset
(the same answer as for a dataset that does not exist); 403 otherwise.

agnes is no person: she reads what her site caches and works its caches
(fill steps, evictions, leases, its volumes' space), and gets 403 for anything
else, creating datasets included; a row says what she gets where it is not
what a reader would (``agent=``). The last test checks that the table covers
every route the app has.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from lakecache.server.app import create_app
from lakecache.server.auth import AGENT_ROUTES
from server.live import PASSWORD, World

AGENT = "agnes"
CALLERS = [None, "nora", "rita", "wendy", "alice", "admin", AGENT]
RANK = {None: 0, "nora": 1, "rita": 2, "wendy": 3, "alice": 4, "admin": 5}
NEEDS = {"public": 0, "user": 1, "reader": 2, "writer": 3, "dsadmin": 4, "orgadmin": 5}
_seq = itertools.count()
#: One of the 250 files of ``many/`` per cache a row makes (a cache per sub-path).
_files = itertools.count()


@dataclass(frozen=True)
class Row:
    method: str
    template: str  # the route as the app declares it
    needs: str
    ok: int
    #: (world, caller) -> (path, request kwargs); default: the template itself.
    make: Callable[[World, str | None], tuple[str, dict[str, Any]]] | None = None
    #: What the agent user gets; None: what anyone gets for a public row, what a reader
    #: gets for a user's or reader's row on the agent's list (AGENT_ROUTES), else 403.
    agent: int | None = None
    #: Run after each caller's request (to undo what it did to the world).
    after: Callable[[World, str | None], None] | None = None

    def request(self, world: World, who: str | None) -> tuple[str, dict[str, Any]]:
        if self.make is None:
            return self.template, {}
        return self.make(world, who)


def _tag(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    name = f"del{next(_seq)}"
    world.plane.hub.catalog.set_tag("xray", name, world.commits["v1"])
    return f"/api/v1/datasets/xray/tags/{name}", {}


def _new_dataset(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    name = f"tmp{next(_seq)}"
    world.plane.accounts.create_owned_dataset(name, "alice", now=world.plane.clock.now())
    for member, role in (("rita", "reader"), ("wendy", "writer")):
        world.plane.accounts.set_member(name, member, role, now=world.plane.clock.now())
    return f"/api/v1/datasets/{name}", {}


def _member(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    name = f"m{next(_seq)}"
    world.plane.accounts.create_user(name, PASSWORD, now=world.plane.clock.now())
    world.plane.accounts.set_member("xray", name, "reader", now=world.plane.clock.now())
    return f"/api/v1/datasets/xray/members/{name}", {}


def _own_token(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    now = world.plane.clock.now()
    record, _ = world.plane.accounts.create_token(who or "rita", "gone", now=now, expires_at=None)
    return f"/api/v1/tokens/{record.id}", {}


def _pending_cache(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    # A cache nobody fills (this server runs no agent): clearing it drops it at once.
    path = f"many/f{next(_files):04d}.bin"
    rec = world.plane.caches().request("xray", "v1", site="local", path=path)
    return f"/api/v1/caches/{rec.id}", {}


def _cache(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    rec = world.plane.caches().request("xray", "v1", site="local", path="images")
    return f"/api/v1/caches/{rec.id}", {}


def _fresh_cache(world: World, state: str = "pending", claimant: str | None = None) -> int:
    """A cache of its own (a sub-path nobody else asks for), in ``state``."""
    plane, now = world.plane, world.plane.clock.now()
    rec = plane.caches().request("xray", "v1", site="local", path=f"many/f{next(_files):04d}.bin")
    if state in ("filling", "ready"):
        stale = timedelta(seconds=60)
        token = plane.topology.claim_fill(rec.id, f"{claimant}/m", now=now, stale_after=stale)
        assert token == 1  # the first claim of a fresh cache; the rows below present it
    if state == "ready":
        assert plane.topology.complete_fill(
            rec.id, token=1, linked_bytes=0, fetched_bytes=0, now=now
        )
    return rec.id


def _step(step: str, state: str, body: dict[str, Any] | None = None) -> Callable[..., Any]:
    """A fill step on a fresh cache; a filling one is claimed by the caller."""

    def make(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
        cache_id = _fresh_cache(world, state, who)
        return f"/api/v1/caches/{cache_id}/{step}", {"json": body} if body is not None else {}

    return make


def _lease(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    plane, now = world.plane, world.plane.clock.now()
    cache_id = _fresh_cache(world, "ready")
    lease = plane.topology.add_lease(
        cache_id, f"{who}/job", now=now, expires_at=now + timedelta(minutes=5)
    )
    return f"/api/v1/leases/{lease}", {"json": {"ttl_seconds": 30}}


def _volume(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    name = f"gone{next(_seq)}"
    world.plane.topology.add_volume(
        name, "local", "/nonexistent/gone", 10**9, 60, world.plane.clock.now()
    )
    return f"/api/v1/volumes/{name}", {}


def _unique(prefix: str, body: Callable[[str], dict[str, Any]]) -> Callable[..., Any]:
    def make(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
        return "", {"json": body(f"{prefix}{next(_seq)}")}

    return make


def _at(path: str, make: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
        _, kw = make(world, who)
        return path, kw

    return wrapped


def _self(suffix: str = "", **kw: Any) -> Callable[..., Any]:
    def make(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
        return f"/api/v1/users/{who or 'rita'}{suffix}", kw

    return make


def _new_token(world: World, who: str | None) -> None:
    """A new password revoked the caller's tokens: give the caller a fresh one."""
    if who is not None:
        now = world.plane.clock.now()
        _, world.tokens[who] = world.plane.accounts.create_token(
            who, "tests", now=now, expires_at=None
        )


def _json(path: str, body: dict[str, Any]) -> Callable[..., Any]:
    return lambda world, who: (path, {"json": body})


_TINY = {"cpu_milli": 1, "memory": 0}
_BIG = {"cpu_milli": 10**9, "memory": 10**15}


def _queue(world: World) -> str:
    """Compute at site ``local`` for the job rows: pool ``mx-pool`` (room for every job the
    rows make), template ``mxq-t`` and queue ``mxq``, made once."""
    from lakecache.compute.model import Resources
    from lakecache.compute.store import ComputeStore

    store = ComputeStore(world.plane.hub.catalog)
    if "mxq" not in {q.name for q in store.list_queues()}:
        now = world.plane.clock.now()
        world.plane.topology.add_compute("mx-pool", "local", "local", {}, [], now)
        store.set_capacity("mx-pool", Resources(10**9, 10**15))
        store.add_template("mxq-t", "mx-pool", Resources(1, 0), None, now)
        store.add_queue("mxq", ["mxq-t"], now=now)
    return "mxq"


def _pool(world: World) -> str:
    _queue(world)
    return "mx-pool"


def _spare_compute(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    name = f"spare{next(_seq)}"
    world.plane.topology.add_compute(name, "local", "local", {}, [], world.plane.clock.now())
    return f"/api/v1/compute/{name}", {}


def _spare_template(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    from lakecache.compute.model import Resources
    from lakecache.compute.store import ComputeStore

    name = f"spare{next(_seq)}"
    ComputeStore(world.plane.hub.catalog).add_template(
        name, _pool(world), Resources(1, 0), None, world.plane.clock.now()
    )
    return f"/api/v1/templates/{name}", {}


def _placed_job(world: World, who: str | None, claimed: bool) -> tuple[int, int]:
    """A job of the caller's own, placed on ``mx-pool`` at site local (claimed by the
    caller when ``claimed``): its id and attempt token."""
    from lakecache.compute.model import Resources
    from lakecache.compute.store import ComputeStore

    store, now = ComputeStore(world.plane.hub.catalog), world.plane.clock.now()
    job = store.submit(
        _queue(world), ["true"], request=Resources(1, 0), submitted_by=who or "rita", now=now
    )
    placed = store.admit(job.id, now=now)
    assert placed is not None and placed.site == "local"
    token = 0
    if claimed:
        got = store.claim(placed, f"{who}/w", now=now)
        assert got is not None
        token = got
    return job.id, token


def _own_job(suffix: str, body: dict[str, Any] | None = None) -> Callable[..., Any]:
    def make(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
        job_id, _ = _placed_job(world, who, claimed=False)
        return f"/api/v1/jobs/{job_id}{suffix}", {"json": body} if body is not None else {}

    return make


def _running_job(suffix: str, body: dict[str, Any] | None = None) -> Callable[..., Any]:
    """A job the caller claimed; the request presents its token."""

    def make(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
        job_id, token = _placed_job(world, who, claimed=True)
        if body is None:  # the log: bytes, the token in the query
            return f"/api/v1/jobs/{job_id}{suffix}?token={token}", {"content": b"log\n"}
        return f"/api/v1/jobs/{job_id}{suffix}", {"json": {"token": token, **body}}

    return make


def _outputs_tar() -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("out.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"out"))
    return buf.getvalue()


def _running_job_outputs(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    """A job the caller claimed; its outputs as a tar, the token in the query."""
    job_id, token = _placed_job(world, who, claimed=True)
    return f"/api/v1/jobs/{job_id}/outputs?token={token}", {
        "content": _outputs_tar(),
        "headers": {"Content-Type": "application/x-tar"},
    }


def _job_output(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    """A job of the caller's own whose outputs hold ``out.txt`` (its blob in the lake)."""
    import tempfile
    from pathlib import Path

    from lakecache.compute.outputs import scan_outputs, upload_outputs
    from lakecache.compute.store import ComputeStore

    job_id, token = _placed_job(world, who, claimed=True)
    hub = world.plane.hub
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "out.txt").write_bytes(b"out")
        manifest, files = upload_outputs(
            scan_outputs(Path(tmp)), lake=hub.lake, catalog=hub.catalog, settings=hub.settings
        )
    ComputeStore(hub.catalog).record_outputs(
        job_id, token, manifest=manifest, files=files, now=world.plane.clock.now()
    )
    return f"/api/v1/jobs/{job_id}/outputs/out.txt", {}


def _flow_yaml(world: World) -> str:
    return (
        "name: mx\ntasks:\n  t:\n    command: 'true'\n"
        f"    queue: {_queue(world)}\n    cpu: 0.001\n"
        "    inputs: {xray: {dataset: xray@v1}}\n"
    )


def _own_flow(suffix: str, ended: bool = False) -> Callable[..., Any]:
    """A flow run of the caller's own (nothing advanced yet; cancelled when ``ended``)."""

    def make(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
        from lakecache.flows import FlowSpec
        from lakecache.flows.engine import FlowEngine

        engine = FlowEngine(world.plane.hub)
        flow = FlowSpec.from_text(_flow_yaml(world), "mx.yaml")
        run_id = engine.start(flow, submitted_by=who or "rita", advance=False)
        if ended:
            engine.cancel(run_id)
        return f"/api/v1/flows/runs/{run_id}{suffix}", {}

    return make


D = "/api/v1/datasets/{dataset}"
X = "/api/v1/datasets/xray"
ROWS = [
    # public
    Row("GET", "/healthz", "public", 200),
    Row("GET", "/metrics", "public", 200),
    Row("GET", "/api/v1/openapi.json", "public", 200),
    Row("GET", "/api/v1/docs", "public", 200),
    Row(
        "POST",
        "/api/v1/auth/login",
        "public",
        200,
        _json("/api/v1/auth/login", {"name": "matrix", "password": PASSWORD}),
    ),
    Row(
        "POST",
        "/api/v1/auth/token",
        "public",
        201,
        _json("/api/v1/auth/token", {"name": "matrix", "password": PASSWORD}),
    ),
    # any logged-in user
    Row("GET", "/api/v1/auth/session", "user", 200),
    Row("POST", "/api/v1/auth/logout", "user", 204),
    Row("GET", "/api/v1/tokens", "user", 200),
    Row("POST", "/api/v1/tokens", "user", 201, _json("/api/v1/tokens", {"name": "t"})),
    Row("DELETE", "/api/v1/tokens/{token_id}", "user", 204, _own_token),
    Row("GET", "/api/v1/users/{name}", "user", 200, _self()),
    Row(
        "PATCH",
        "/api/v1/users/{name}",
        "user",
        200,
        _self(json={"password": PASSWORD, "current_password": PASSWORD}),
        after=_new_token,
    ),
    Row("GET", "/api/v1/sites", "user", 200),
    Row("GET", "/api/v1/sites/{site}", "user", 200, _json("/api/v1/sites/local", {})),
    Row("GET", "/api/v1/volumes", "user", 200),
    Row("GET", "/api/v1/volumes/{volume}", "user", 200, _json("/api/v1/volumes/local", {})),
    Row(
        "GET",
        "/api/v1/volumes/{volume}/caches",
        "user",
        200,
        _json("/api/v1/volumes/local/caches", {}),
    ),
    Row("GET", "/api/v1/compute", "user", 200),
    Row("GET", "/api/v1/caches", "user", 200),
    Row("GET", "/api/v1/datasets", "user", 200),
    Row(
        "POST",
        "/api/v1/datasets",
        "user",
        201,
        _at("/api/v1/datasets", _unique("new", lambda n: {"name": n})),
        agent=403,
    ),
    # org admins
    Row("GET", "/api/v1/users", "orgadmin", 200),
    Row(
        "POST",
        "/api/v1/users",
        "orgadmin",
        201,
        _at("/api/v1/users", _unique("u", lambda n: {"name": n})),
    ),
    Row("GET", "/api/v1/server", "orgadmin", 200),
    Row(
        "POST",
        "/api/v1/sites",
        "orgadmin",
        201,
        _at("/api/v1/sites", _unique("s", lambda n: {"name": n})),
    ),
    Row(
        "POST",
        "/api/v1/volumes",
        "orgadmin",
        201,
        _at(
            "/api/v1/volumes",
            _unique(
                "v",
                lambda n: {
                    "name": n,
                    "site": "local",
                    "root": "/nonexistent/vol",
                    "capacity": 10**9,
                },
            ),
        ),
    ),
    Row(
        "POST",
        "/api/v1/compute",
        "orgadmin",
        201,
        _at("/api/v1/compute", _unique("c", lambda n: {"name": n, "site": "local"})),
    ),
    Row("DELETE", "/api/v1/volumes/{volume}", "orgadmin", 204, _volume),
    Row(
        "PATCH",
        "/api/v1/volumes/{volume}",
        "orgadmin",
        200,
        _json("/api/v1/volumes/local", {"ttl_seconds": 3600}),
    ),
    Row(
        "PUT",
        "/api/v1/volumes/{volume}/space",
        "orgadmin",
        204,
        _json("/api/v1/volumes/local/space", {"free_bytes": 10**9, "total_bytes": 2 * 10**9}),
        agent=204,  # its own site's volume
    ),
    # readers of the dataset
    Row("GET", D, "reader", 200, _json(X, {})),
    Row("GET", D + "/members", "reader", 200, _json(X + "/members", {}), agent=403),
    Row("GET", D + "/tags", "reader", 200, _json(X + "/tags", {})),
    Row("GET", D + "/commits", "reader", 200, _json(X + "/commits", {})),
    Row("GET", D + "/commits/{ref}", "reader", 200, _json(X + "/commits/v1", {})),
    Row("GET", D + "/commits/{ref}/tree", "reader", 200, _json(X + "/commits/v1/tree", {})),
    Row(
        "GET",
        D + "/commits/{ref}/tree/{path}",
        "reader",
        200,
        _json(X + "/commits/v1/tree/images", {}),
    ),
    Row(
        "GET",
        D + "/commits/{ref}/files/{path}",
        "reader",
        200,
        _json(X + "/commits/v1/files/images/a.png", {}),
    ),
    Row("GET", D + "/diff", "reader", 200, _json(X + "/diff?from=v1", {})),
    Row("GET", D + "/caches", "reader", 200, _json(X + "/caches", {})),
    Row("GET", "/api/v1/caches/{cache_id}", "reader", 200, _cache),
    # writers
    Row(
        "PUT",
        D + "/tags/{tag}",
        "writer",
        200,
        _at(X + "/tags/wtag", lambda w, who: ("", {"json": {"ref": "v1", "force": True}})),
    ),
    Row("DELETE", D + "/tags/{tag}", "writer", 204, _tag),
    Row(
        "POST",
        D + "/caches",
        "writer",
        202,
        _json(X + "/caches", {"ref": "v1", "site": "local", "path": "docs"}),
    ),
    Row(
        "PATCH",
        "/api/v1/caches/{cache_id}",
        "writer",
        200,
        lambda w, who: (_cache(w, who)[0], {"json": {"pinned": False}}),
    ),
    Row("DELETE", "/api/v1/caches/{cache_id}", "writer", 202, _pending_cache),
    # what the workers of a cache report (fills, evictions, verifies) and leases
    Row(
        "POST",
        "/api/v1/caches/{cache_id}/claim",
        "writer",
        200,
        _step("claim", "pending", {"worker": "h:1"}),
        agent=200,
    ),
    Row(
        "POST",
        "/api/v1/caches/{cache_id}/heartbeat",
        "writer",
        200,
        _step("heartbeat", "filling", {"token": 1, "done_bytes": 1}),
        agent=200,
    ),
    Row(
        "POST",
        "/api/v1/caches/{cache_id}/ready",
        "writer",
        200,
        _step("ready", "filling", {"token": 1, "linked_bytes": 0, "fetched_bytes": 0}),
        agent=200,
    ),
    Row(
        "POST",
        "/api/v1/caches/{cache_id}/failed",
        "writer",
        200,
        _step("failed", "filling", {"token": 1, "reason": "disk"}),
        agent=200,
    ),
    Row(
        "POST",
        "/api/v1/caches/{cache_id}/eviction",
        "writer",
        200,
        _step("eviction", "ready"),
        agent=200,
    ),
    Row(
        "POST",
        "/api/v1/caches/{cache_id}/evicted",
        "writer",
        200,
        _step("evicted", "ready", {"token": 1}),
        agent=200,
    ),
    Row(
        "PUT",
        "/api/v1/caches/{cache_id}/report",
        "writer",
        200,
        _step("report", "ready", {"report": "ok"}),
        agent=200,
    ),
    Row(
        "POST",
        "/api/v1/caches/{cache_id}/requests",
        "writer",
        202,
        _step("requests", "ready", {"request": "verify"}),
    ),
    Row(
        "DELETE",
        "/api/v1/caches/{cache_id}/requests/{request}",
        "writer",
        200,
        _step("requests/verify", "ready"),
        agent=200,
    ),
    Row(
        "POST",
        "/api/v1/caches/{cache_id}/leases",
        "reader",
        201,
        _step("leases", "ready", {"holder": "job"}),
    ),
    Row("PUT", "/api/v1/leases/{lease_id}", "reader", 200, _lease),
    Row(
        "DELETE", "/api/v1/leases/{lease_id}", "reader", 204, lambda w, who: (_lease(w, who)[0], {})
    ),
    # dataset admins
    Row(
        "PUT",
        D + "/members/{user}",
        "dsadmin",
        200,
        lambda w, who: (_member(w, who)[0], {"json": {"role": "writer"}}),
    ),
    Row("DELETE", D + "/members/{user}", "dsadmin", 204, _member),
    Row("DELETE", D, "dsadmin", 204, _new_dataset),
    # compute: capacity, templates and queues (org admins change them; anyone lists)
    Row("GET", "/api/v1/compute/capacity", "user", 200),
    Row(
        "PUT",
        "/api/v1/compute/{compute}/capacity",
        "orgadmin",
        200,
        lambda w, who: (f"/api/v1/compute/{_pool(w)}/capacity", {"json": _BIG}),
    ),
    Row("DELETE", "/api/v1/compute/{compute}", "orgadmin", 204, _spare_compute),
    Row("GET", "/api/v1/templates", "user", 200),
    Row(
        "POST",
        "/api/v1/templates",
        "orgadmin",
        201,
        lambda w, who: (
            "/api/v1/templates",
            {"json": {"name": f"t{next(_seq)}", "compute": _pool(w), "size": _TINY}},
        ),
    ),
    Row("DELETE", "/api/v1/templates/{template}", "orgadmin", 204, _spare_template),
    Row("GET", "/api/v1/queues", "user", 200),
    Row(
        "POST",
        "/api/v1/queues",
        "orgadmin",
        201,
        lambda w, who: (
            "/api/v1/queues",
            {"json": {"name": f"q{next(_seq)}", "templates": [_queue(w) + "-t"]}},
        ),
    ),
    # jobs: submit (reading each input), and one's own jobs; agnes submits none
    Row(
        "POST",
        "/api/v1/jobs",
        "reader",
        201,
        lambda w, who: (
            "/api/v1/jobs",
            {
                "json": {
                    "queue": _queue(w),
                    "command": ["true"],
                    "inputs": [{"name": "xray", "dataset": "xray", "ref": "v1"}],
                    "request": _TINY,
                }
            },
        ),
        agent=403,
    ),
    Row(
        "POST",
        "/api/v1/jobs/batch",
        "reader",
        201,
        lambda w, who: (
            "/api/v1/jobs/batch",
            {
                "json": {
                    "jobs": [
                        {
                            "queue": _queue(w),
                            "command": ["true"],
                            "inputs": [{"name": "xray", "dataset": "xray", "ref": "v1"}],
                            "request": _TINY,
                        },
                        {"queue": _queue(w), "command": ["true"], "request": _TINY},
                    ]
                }
            },
        ),
        agent=403,
    ),
    Row("GET", "/api/v1/jobs", "user", 200),
    Row("GET", "/api/v1/jobs/{job_id}", "user", 200, _own_job("")),
    Row("GET", "/api/v1/jobs/{job_id}/log", "user", 200, _own_job("/log")),
    Row("POST", "/api/v1/jobs/{job_id}/cancel", "user", 200, _own_job("/cancel"), agent=403),
    Row("GET", "/api/v1/jobs/{job_id}/outputs", "user", 200, _own_job("/outputs")),
    Row("GET", "/api/v1/jobs/{job_id}/outputs/{path}", "user", 200, _job_output),
    # flows: start (reading each input), and one's own runs; agnes runs none
    Row(
        "POST",
        "/api/v1/flows/runs",
        "reader",
        201,
        lambda w, who: ("/api/v1/flows/runs", {"json": {"source": _flow_yaml(w)}}),
    ),
    Row("GET", "/api/v1/flows/runs", "user", 200),
    Row("GET", "/api/v1/flows/runs/{run_id}", "user", 200, _own_flow("")),
    Row("POST", "/api/v1/flows/runs/{run_id}/cancel", "user", 200, _own_flow("/cancel")),
    Row("POST", "/api/v1/flows/runs/{run_id}/resume", "user", 200, _own_flow("/resume", True)),
    # what a site's agent reports (agnes for site local, where the jobs are placed)
    Row(
        "POST",
        "/api/v1/scheduler/pass",
        "orgadmin",
        200,
        _json("/api/v1/scheduler/pass", {}),
        agent=200,
    ),
    Row(
        "GET",
        "/api/v1/sites/{site}/placed-jobs",
        "orgadmin",
        200,
        _json("/api/v1/sites/local/placed-jobs", {}),
        agent=200,
    ),
    Row(
        "POST",
        "/api/v1/jobs/{job_id}/claim",
        "orgadmin",
        200,
        _own_job("/claim", {"worker": "w", "attempt": 0}),
        agent=200,
    ),
    Row(
        "POST",
        "/api/v1/jobs/{job_id}/heartbeat",
        "orgadmin",
        200,
        _running_job("/heartbeat", {}),
        agent=200,
    ),
    Row(
        "POST",
        "/api/v1/jobs/{job_id}/events",
        "orgadmin",
        204,
        _running_job("/events", {"kind": "preparing", "detail": "here"}),
        agent=204,
    ),
    Row(
        "POST",
        "/api/v1/jobs/{job_id}/finish",
        "orgadmin",
        200,
        _running_job("/finish", {"state": "succeeded", "exit_code": 0}),
        agent=200,
    ),
    Row(
        "POST",
        "/api/v1/jobs/{job_id}/release",
        "orgadmin",
        200,
        _running_job("/release", {"reason": "stopping"}),
        agent=200,
    ),
    Row("PUT", "/api/v1/jobs/{job_id}/log", "orgadmin", 200, _running_job("/log"), agent=200),
    Row(
        "PUT",
        "/api/v1/jobs/{job_id}/outputs",
        "orgadmin",
        200,
        _running_job_outputs,
        agent=200,
    ),
]


# -- tracking (lakecache.server.routes.tracking) -------------------------------------------
# A person logs to and reads their own runs; agnes (site local's agent) the runs of the jobs
# placed at her site; a run of someone else's is the 404 of a run that does not exist.


def _run_for(world: World, who: str | None) -> int:
    """A run of the caller's own; for agnes, the run of a job at her site (rita's)."""
    from lakecache.compute.store import ComputeStore
    from lakecache.tracking.jobs import job_run
    from lakecache.tracking.store import TrackingStore

    store = TrackingStore(world.plane.hub.catalog)
    if who == AGENT:
        job_id, _ = _placed_job(world, "rita", claimed=False)
        job = ComputeStore(world.plane.hub.catalog).get_job(job_id)
        return job_run(store, job, 1).id
    return store.create_run("Default", user=who or "rita").id


def _own_run(suffix: str, **kw: Any) -> Callable[..., Any]:
    def make(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
        return f"/api/v1/tracking/runs/{_run_for(world, who)}{suffix}", dict(kw)

    return make


def _run_with_artifact(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    from lakecache.tracking import objects
    from lakecache.tracking.store import TrackingStore

    run_id = _run_for(world, who)
    store = TrackingStore(world.plane.hub.catalog)
    digest = objects.put_bytes(world.plane.hub.lake, b"artifact")
    store.add_artifact(run_id, "a/b.txt", digest, 8)
    return f"/api/v1/tracking/runs/{run_id}/artifacts/a/b.txt", {}


def _own_experiment(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    from lakecache.tracking.store import TrackingStore

    name = f"exp{next(_seq)}"
    TrackingStore(world.plane.hub.catalog).create_experiment(name, who or "rita")
    return f"/api/v1/tracking/experiments/{name}", {}


def _job_run_body(world: World, who: str | None) -> tuple[str, dict[str, Any]]:
    job_id, _ = _placed_job(world, "rita", claimed=False)
    return "/api/v1/tracking/job-runs", {"json": {"job_id": job_id, "attempt": 1}}


T = "/api/v1/tracking/runs/{run_id}"
ROWS += [
    Row("GET", "/api/v1/tracking/experiments", "user", 200),
    Row(
        "POST",
        "/api/v1/tracking/experiments",
        "user",
        201,
        lambda w, who: ("/api/v1/tracking/experiments", {"json": {"name": f"e{next(_seq)}"}}),
    ),
    Row("GET", "/api/v1/tracking/experiments/{experiment}", "user", 200, _own_experiment),
    Row("GET", "/api/v1/tracking/runs", "user", 200),
    Row("POST", "/api/v1/tracking/runs", "user", 201, _json("/api/v1/tracking/runs", {})),
    Row("POST", "/api/v1/tracking/job-runs", "orgadmin", 201, _job_run_body, agent=201),
    Row("GET", T, "user", 200, _own_run("")),
    Row("POST", T + "/batch", "user", 200, _own_run("/batch", json={"params": {"a": "1"}})),
    Row("POST", T + "/end", "user", 200, _own_run("/end", json={"status": "finished"})),
    Row(
        "POST",
        T + "/inputs",
        "user",
        204,
        _own_run("/inputs", json={"dataset": "xray", "commit_id": "c" * 64, "source": "stream"}),
    ),
    Row("GET", T + "/metrics/{key}", "user", 200, _own_run("/metrics/loss")),
    Row("GET", T + "/artifacts", "user", 200, _own_run("/artifacts")),
    Row("GET", T + "/artifacts/{path}", "user", 200, _run_with_artifact),
    Row("PUT", T + "/artifacts/{path}", "user", 200, _own_run("/artifacts/x/y.bin", content=b"y")),
    Row("GET", T + "/logs/{stream}", "user", 200, _own_run("/logs/output")),
    Row("PUT", T + "/logs/{stream}", "user", 200, _own_run("/logs/output", content=b"hi\n")),
]


def expected(row: Row, who: str | None) -> int:
    if who == AGENT:
        if row.agent is not None:
            return row.agent
        if row.needs == "public":
            return row.ok
        if row.template.startswith("/api/v1/lake"):
            # The lake routes check roles per dataset, not by the agent's route list: she
            # reads what her site caches (xray here) and writes nothing.
            return row.ok if row.needs in ("user", "reader") else 403
        if (row.method, row.template) not in AGENT_ROUTES:
            return 403  # anything not on the agent's list, a route added later included
        return row.ok if row.needs in ("user", "reader") else 403
    if RANK[who] >= NEEDS[row.needs]:
        return row.ok
    if who is None:
        return 401
    if row.needs in ("reader", "writer", "dsadmin") and who == "nora":
        return 404
    return 403


@pytest.fixture(scope="module")
def matrix_world(world_factory: Callable[..., World]) -> World:
    w = world_factory(agents=False)
    now = w.plane.clock.now()
    w.plane.accounts.create_user("matrix", PASSWORD, now=now)
    w.plane.accounts.create_user(AGENT, PASSWORD, agent_site="local", now=now)
    _, w.tokens[AGENT] = w.plane.accounts.create_token(AGENT, "site", now=now, expires_at=None)
    # A cache of xray on agnes's site (nobody fills it: no agent runs): she may read xray.
    w.plane.caches().request("xray", "v1", site="local", path="images")
    return w


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.method} {r.template}")
def test_each_caller_gets_what_its_role_allows(matrix_world: World, row: Row) -> None:
    got = {}
    for who in CALLERS:
        path, kw = row.request(matrix_world, who)
        r = matrix_world.call(who, row.method, path, **kw)
        if row.after is not None:
            row.after(matrix_world, who)
        got[who] = r.status_code
        if r.status_code >= 400:
            body = r.json()
            assert set(body) == {"error"} and {"code", "message", "hint"} <= set(body["error"])
            if r.status_code == 404:
                # The same words as for a dataset that does not exist: nothing leaks.
                assert (
                    "xray" not in body["error"]["message"]
                    or "no dataset named" in body["error"]["message"]
                )
    assert got == {who: expected(row, who) for who in CALLERS}


def test_non_members_cannot_tell_a_hidden_dataset_from_a_missing_one(matrix_world: World) -> None:
    for path in ("", "/commits", "/commits/latest/tree", "/members", "/caches"):
        hidden = matrix_world.call("nora", "GET", f"/api/v1/datasets/hidden{path}")
        missing = matrix_world.call("nora", "GET", f"/api/v1/datasets/nosuch{path}")
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"]["message"].replace("hidden", "X") == missing.json()["error"][
            "message"
        ].replace("nosuch", "X")
    listed = matrix_world.call("alice", "GET", "/api/v1/datasets").json()["items"]
    names = [d["name"] for d in listed]
    assert "hidden" not in names and "xray" in names
    everything = matrix_world.call("admin", "GET", "/api/v1/datasets?limit=1000").json()["items"]
    assert {"hidden", "xray"} <= {d["name"] for d in everything}
    # A cache of the hidden dataset: a non-member gets the same 404 as for no cache.
    rec = matrix_world.plane.caches().request("hidden", None, site="local")
    seen = matrix_world.call("nora", "GET", f"/api/v1/caches/{rec.id}")
    assert seen.status_code == 404 and "hidden" not in seen.text
    listed = matrix_world.call("nora", "GET", "/api/v1/caches").json()["items"]
    assert all(c["dataset"] != "hidden" for c in listed)


def test_the_matrix_covers_every_route(matrix_world: World) -> None:
    """Every operation of the API's spec (every route but the spec and docs pages) has a row.

    The lake routes that clients use to commit and pull have their own matrix
    (tests/client/test_lake_authz.py), where a lake with real objects exists; the
    dashboard's pages and data routes (``/jobs/{id}/live`` and the like) theirs
    (tests/server/test_dashboard_authz.py), which fails for a route without a row too.
    """
    app = create_app(matrix_world.settings, matrix_world.plane.config, plane=matrix_world.plane)
    spec = app.openapi()["paths"]
    routes = {
        (m.upper(), p) for p, ops in spec.items() for m in ops if not p.startswith("/api/v1/lake")
    }
    routes |= {("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/docs")}
    assert len(routes) >= 45
    assert routes == {(r.method, r.template) for r in ROWS}
