"""A job runner's reports sent twice count once, on SQLite and on PostgreSQL.

Behind a load balancer, the server replica a runner's request reached may die
after it wrote and before it answered; the runner sends the request again (to
another replica) without knowing which. Here the server is real and the
breaking is done by the client's transport: it lets the server handle the
request, then loses the answer as a dead replica's connection does.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from lakecache.client.connection import ServerConnection
from lakecache.client.errors import ServerUnreachableError
from lakecache.client.jobs import RemoteJobs
from lakecache.compute import tables as ct
from lakecache.compute.model import Resources
from lakecache.compute.outputs import scan_outputs
from lakecache.compute.store import ComputeStore
from lakecache.settings import Settings
from server.live import PASSWORD, World

SITE = "local"
_databases = itertools.count()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def jobs_world(
    request: pytest.FixtureRequest,
    world_factory: Callable[..., World],
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    """A server without agents (its catalog on SQLite or PostgreSQL), a pool at site
    ``local`` with template ``t1`` and queue ``q``; ``agnes`` is that site's agent user."""
    settings = None
    if request.param == "postgres":
        postgres = request.getfixturevalue("postgres")
        url = postgres.create_database(f"resend_{os.getpid()}_{next(_databases)}")
        home = tmp_path_factory.mktemp("resend") / "home"
        settings = Settings(home=home, catalog_url=url, workers=4, author="tester")
    w = world_factory(settings, agents=False)
    plane, now = w.plane, w.plane.clock.now()
    plane.topology.add_compute("pool", SITE, "local", {}, [], now)
    store = ComputeStore(plane.hub.catalog)
    store.set_capacity("pool", Resources(64000, 10**11))
    store.add_template("t1", "pool", Resources(1000, 10**9), None, now)
    store.add_queue("q", ["t1"], now=now)
    plane.accounts.create_user("agnes", PASSWORD, agent_site=SITE, now=now)
    _, w.tokens["agnes"] = plane.accounts.create_token("agnes", "site", now=now, expires_at=None)
    return w


def _submit(w: World) -> int:
    body = {"queue": "q", "command": ["true"], "request": {"cpu_milli": 1000}}
    r = w.call("wendy", "POST", "/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "placed"
    return int(r.json()["id"])


def _agent(w: World, method: str, path: str, **kw: Any) -> httpx.Response:
    return w.call("agnes", method, f"/api/v1/jobs/{path}", **kw)


def _count(w: World, table: Any, job_id: int, **where: Any) -> int:
    q = select(func.count()).select_from(table).where(table.c.job_id == job_id)
    for column, value in where.items():
        q = q.where(table.c[column] == value)
    with w.plane.hub.catalog._read() as conn:
        return int(conn.scalar(q) or 0)


def test_an_event_sent_again_with_its_key_is_written_once(jobs_world: World) -> None:
    w = jobs_world
    job_id = _submit(w)
    token = _agent(w, "POST", f"{job_id}/claim", json={"worker": "w", "attempt": 0}).json()["token"]
    events = ct.compute_job_events

    entry = {"token": token, "kind": "data ready", "detail": "xray", "key": "ab" * 16}
    for _ in range(2):
        r = _agent(w, "POST", f"{job_id}/events", json=entry)
        assert r.status_code == 204, r.text
    assert _count(w, events, job_id, kind="data ready") == 1
    # Another key is another entry; the same key on another job is that job's own.
    r = _agent(w, "POST", f"{job_id}/events", json={**entry, "key": "cd" * 16})
    assert r.status_code == 204
    assert _count(w, events, job_id, kind="data ready") == 2
    other = _submit(w)
    other_token = _agent(w, "POST", f"{other}/claim", json={"worker": "w", "attempt": 0}).json()
    r = _agent(w, "POST", f"{other}/events", json={**entry, "token": other_token["token"]})
    assert r.status_code == 204
    assert _count(w, events, other, kind="data ready") == 1
    # Without a key (an older agent) each send is an entry, as before.
    for _ in range(2):
        r = _agent(w, "POST", f"{job_id}/events", json={"token": token, "kind": "k", "detail": ""})
        assert r.status_code == 204
    assert _count(w, events, job_id, kind="k") == 2
    # A key that is not hex is refused, saying which field.
    r = _agent(w, "POST", f"{job_id}/events", json={**entry, "key": "../../x"})
    assert r.status_code == 422 and "key" in r.text
    # A stale attempt's entry is refused even with a key seen before.
    store = ComputeStore(w.plane.hub.catalog)
    assert store.finish(
        job_id, token, state="succeeded", exit_code=0, reason=None, now=w.plane.clock.now()
    )
    r = _agent(w, "POST", f"{job_id}/events", json={**entry, "key": "ef" * 16})
    assert r.status_code == 409 and r.json()["error"]["code"] == "taken_over"


def test_a_finish_sent_again_is_answered_as_the_first_was(jobs_world: World) -> None:
    w = jobs_world
    job_id = _submit(w)
    token = _agent(w, "POST", f"{job_id}/claim", json={"worker": "w", "attempt": 0}).json()["token"]
    end = {"token": token, "state": "failed", "exit_code": 3, "reason": "exit code 3"}
    first = _agent(w, "POST", f"{job_id}/finish", json=end)
    again = _agent(w, "POST", f"{job_id}/finish", json=end)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["state"] == "failed" and again.json()["exit_code"] == 3
    assert _count(w, ct.compute_job_events, job_id, kind="failed") == 1
    # A different end of that attempt is not a repeat: the attempt is over (409).
    for changed in ({"state": "succeeded", "exit_code": 0}, {"exit_code": 4}):
        r = _agent(w, "POST", f"{job_id}/finish", json={**end, **changed})
        assert r.status_code == 409 and r.json()["error"]["code"] == "taken_over", changed
    # Nor is an attempt that never ran.
    r = _agent(w, "POST", f"{job_id}/finish", json={**end, "token": token + 1})
    assert r.status_code == 409


def test_a_claim_sent_again_by_its_worker_gets_its_token_and_no_one_elses(
    jobs_world: World,
) -> None:
    w = jobs_world
    job_id = _submit(w)
    claim = {"worker": "host:1:local:abc123", "attempt": 0}
    first = _agent(w, "POST", f"{job_id}/claim", json=claim).json()
    again = _agent(w, "POST", f"{job_id}/claim", json=claim).json()
    assert first["token"] == again["token"] == 1
    # The first answer was lost: the repeat carries a job token of its own, which works.
    assert again["job_token"] and again["job_token"] != first["job_token"]
    auth = {"Authorization": f"Bearer {again['job_token']}"}
    assert w.call(None, "GET", "/api/v1/datasets", headers=auth).status_code == 403  # not 401
    # Another worker (of the same agent user) does not get it; one attempt, one claim.
    other = _agent(w, "POST", f"{job_id}/claim", json={**claim, "worker": "host:2:local:def456"})
    assert other.json()["token"] is None
    assert _count(w, ct.compute_job_attempts, job_id) == 1
    assert _count(w, ct.compute_job_events, job_id, kind="claimed") == 1
    # Once that attempt is over, the same claim is a stale one.
    store = ComputeStore(w.plane.hub.catalog)
    assert store.finish(
        job_id, 1, state="succeeded", exit_code=0, reason=None, now=w.plane.clock.now()
    )
    assert _agent(w, "POST", f"{job_id}/claim", json=claim).json()["token"] is None


class LosesFirstAnswer(httpx.BaseTransport):
    """Hands each request to the server; the first to each path ending in one of
    ``endings`` then loses its answer (the server has acted), as when the replica that
    served it died before answering. With ``before``, that first request never reaches
    the server instead (the connection broke while it was sent)."""

    def __init__(self, *endings: str, before: bool = False) -> None:
        self._inner = httpx.HTTPTransport()
        self._left = set(endings)
        self._before = before
        self.sent: list[str] = []
        self.broken: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.sent.append(f"{request.method} {path}")
        ending = next((e for e in self._left if path.endswith(e)), None)
        if ending is not None and self._before:
            self._left.discard(ending)
            self.broken.append(path)
            raise httpx.WriteError("Connection reset by peer", request=request)
        response = self._inner.handle_request(request)
        if ending is None:
            return response
        response.read()
        response.close()
        self._left.discard(ending)
        self.broken.append(path)
        raise httpx.RemoteProtocolError(
            "Server disconnected without sending a response.", request=request
        )

    def close(self) -> None:
        self._inner.close()


@pytest.fixture
def remote(jobs_world: World) -> Iterator[Callable[..., tuple[RemoteJobs, LosesFirstAnswer]]]:
    made: list[ServerConnection] = []

    def make(
        *endings: str, before: bool = False, who: str = "agnes"
    ) -> tuple[RemoteJobs, LosesFirstAnswer]:
        transport = LosesFirstAnswer(*endings, before=before)
        conn = ServerConnection(jobs_world.url, jobs_world.tokens[who], transport=transport)
        made.append(conn)
        return RemoteJobs(conn), transport

    yield make
    for conn in made:
        conn.close()


def test_a_runners_calls_whose_answers_are_lost_each_take_effect_once(
    jobs_world: World, remote: Callable[..., tuple[RemoteJobs, LosesFirstAnswer]], tmp_path: Path
) -> None:
    w = jobs_world
    jobs, transport = remote("/pass", "/claim", "/events", "/heartbeat", "/outputs", "/finish")
    job = jobs.get_job(_submit(w))
    now = w.plane.clock.now()
    assert jobs.schedule(now=now) == 0  # the job was placed at submit

    token = jobs.claim(job, "host:9:local:0a1b2c", now=now)
    assert token == 1 and jobs.job_token(job.id, 1) is not None
    assert jobs.record(job.id, 1, "data ready", "xray@v1", now=now) is True
    assert jobs.heartbeat(job.id, 1, now=now) == "run"
    outputs = tmp_path / "outputs"
    (outputs / "model").mkdir(parents=True)
    (outputs / "model" / "w.bin").write_bytes(os.urandom(300_000))
    manifest, files = jobs.ship_outputs(job.id, 1, scan_outputs(outputs), job_token=None)
    assert [f.path for f in files] == ["model/w.bin"] and files[0].size == 300_000
    assert jobs.finish(job.id, 1, state="succeeded", exit_code=0, reason=None, now=now) is True

    # Each call's first answer was lost after the server acted, and each was sent again.
    assert len(transport.broken) == 6
    for ending in ("/pass", "/claim", "/events", "/heartbeat", "/outputs", "/finish"):
        assert sum(s.endswith(ending) for s in transport.sent) == 2, ending
    # ...and each took effect once.
    final = ComputeStore(w.plane.hub.catalog).get_job(job.id)
    assert (final.state, final.attempt, final.exit_code) == ("succeeded", 1, 0)
    assert final.outputs_manifest == manifest and final.outputs_files == 1
    events = ct.compute_job_events
    assert _count(w, ct.compute_job_attempts, job.id) == 1
    for kind in ("claimed", "data ready", "succeeded"):
        assert _count(w, events, job.id, kind=kind) == 1, kind
    assert [f.path for f in jobs.outputs(job.id)] == ["model/w.bin"]
    assert (
        b"".join(jobs.read_output(job.id, "model/w.bin"))
        == (outputs / "model" / "w.bin").read_bytes()
    )


def test_a_call_broken_before_the_server_saw_it_is_sent_again(
    jobs_world: World, remote: Callable[..., tuple[RemoteJobs, LosesFirstAnswer]]
) -> None:
    w = jobs_world
    jobs, transport = remote("/claim", "/events", "/finish", before=True)
    job = jobs.get_job(_submit(w))
    now = w.plane.clock.now()
    assert jobs.claim(job, "host:9:local:3d4e5f", now=now) == 1
    assert jobs.record(job.id, 1, "started", "local: pid 1", now=now) is True
    assert jobs.finish(job.id, 1, state="succeeded", exit_code=0, reason=None, now=now) is True
    assert len(transport.broken) == 3
    assert _count(w, ct.compute_job_events, job.id, kind="started") == 1
    assert ComputeStore(w.plane.hub.catalog).get_job(job.id).state == "succeeded"


def test_a_call_not_marked_safe_or_answered_with_an_error_is_not_sent_again(
    jobs_world: World, remote: Callable[..., tuple[RemoteJobs, LosesFirstAnswer]]
) -> None:
    w = jobs_world
    submitter, sent = remote("/cancel", who="wendy")
    job = submitter.get_job(_submit(w))
    # A cancel is not marked safe to resend: its lost answer is the caller's error, though
    # the server did cancel the job.
    with pytest.raises(ServerUnreachableError, match="cancel"):
        submitter.cancel(job.id, now=w.plane.clock.now())
    assert sum(s.endswith("/cancel") for s in sent.sent) == 1
    assert ComputeStore(w.plane.hub.catalog).get_job(job.id).state == "cancelled"
    # An answer, even a refusal, is final: a stale finish is sent once and is False.
    jobs, transport = remote()
    now = w.plane.clock.now()
    assert jobs.finish(job.id, 1, state="succeeded", exit_code=0, reason=None, now=now) is False
    assert sum(s.endswith("/finish") for s in transport.sent) == 1
