"""The compute API on a live server: fencing of agents' reports, logs, job tokens.

What a site agent reports about a job carries the attempt's fencing token; once
the job was requeued and started again, the old attempt's heartbeat, events,
end and log are refused with 409 ``taken_over``, and its runner stops. A job's
own token reads its inputs while that attempt runs, and nothing after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lakecache.compute.model import Resources
from lakecache.compute.store import ComputeStore
from server.live import PASSWORD, World

SITE = "local"


@pytest.fixture(scope="module")
def jobs_world(world_factory: Callable[..., World]) -> World:
    """A server without agents; a pool at site local, template ``t1`` and queue ``q``;
    ``agnes`` is the agent user of site local."""
    w = world_factory(agents=False)
    plane, now = w.plane, w.plane.clock.now()
    plane.topology.add_compute("pool", SITE, "local", {}, [], now)
    store = ComputeStore(plane.hub.catalog)
    store.set_capacity("pool", Resources(4000, 10**10))
    store.add_template("t1", "pool", Resources(1000, 10**9), None, now)
    store.add_queue("q", ["t1"], now=now)
    plane.accounts.create_user("agnes", PASSWORD, agent_site=SITE, now=now)
    _, w.tokens["agnes"] = plane.accounts.create_token("agnes", "site", now=now, expires_at=None)
    return w


def _submit(w: World, who: str = "wendy", **extra: Any) -> dict[str, Any]:
    body = {"queue": "q", "command": ["true"], "request": {"cpu_milli": 1000}, **extra}
    r = w.call(who, "POST", "/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _claim(w: World, job_id: int, attempt: int, worker: str = "w") -> dict[str, Any]:
    r = w.call(
        "agnes",
        "POST",
        f"/api/v1/jobs/{job_id}/claim",
        json={"worker": worker, "attempt": attempt},
    )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_a_stale_attempts_reports_are_refused_and_the_new_attempt_is_untouched(
    jobs_world: World,
) -> None:
    w = jobs_world
    job = _submit(w, inputs=[{"name": "xray", "dataset": "xray", "ref": "v1", "mode": "stream"}])
    assert job["state"] == "placed" and job["site"] == SITE
    first = _claim(w, job["id"], 0)
    assert first["token"] == 1 and first["job_token"].startswith("lcj_")
    # A second agent that saw the same placed job loses the swap.
    assert _claim(w, job["id"], 0, worker="w2")["token"] is None
    auth = {"Authorization": f"Bearer {first['job_token']}"}
    assert w.call(None, "GET", "/api/v1/datasets/xray", headers=auth).status_code == 200

    # The first agent goes silent; the job is requeued and a new attempt starts.
    store = ComputeStore(w.plane.hub.catalog)
    assert store.release(job["id"], 1, reason="its agent went silent", now=w.plane.clock.now())
    w.call("agnes", "POST", "/api/v1/scheduler/pass", json={})
    second = _claim(w, job["id"], 1)
    assert second["token"] == 2
    # The first attempt's token no longer reads anything: it ended with its attempt.
    assert w.call(None, "GET", "/api/v1/datasets/xray", headers=auth).status_code == 401

    jid = job["id"]
    for method, path, kw in [
        ("POST", f"/api/v1/jobs/{jid}/heartbeat", {"json": {"token": 1}}),
        ("POST", f"/api/v1/jobs/{jid}/events", {"json": {"token": 1, "kind": "x", "detail": "y"}}),
        ("POST", f"/api/v1/jobs/{jid}/finish", {"json": {"token": 1, "state": "succeeded"}}),
        ("POST", f"/api/v1/jobs/{jid}/release", {"json": {"token": 1, "reason": "stop"}}),
        ("PUT", f"/api/v1/jobs/{jid}/log?token=1", {"content": b"stale bytes\n"}),
    ]:
        r = w.call("agnes", method, path, **kw)
        assert r.status_code == 409, (path, r.text)
        assert r.json()["error"]["code"] == "taken_over"
    rec = store.get_job(jid)
    assert rec.state == "running" and rec.attempt == 2 and rec.exit_code is None

    # The new attempt reports; its log is what it wrote, never the stale bytes.
    r = w.call("agnes", "PUT", f"/api/v1/jobs/{jid}/log?token=2", content=b"attempt two\n")
    assert r.status_code == 200 and r.json()["size"] == 12
    r = w.call("agnes", "POST", f"/api/v1/jobs/{jid}/heartbeat", json={"token": 2})
    assert r.json()["verdict"] == "run"
    r = w.call(
        "agnes",
        "POST",
        f"/api/v1/jobs/{jid}/finish",
        json={"token": 2, "state": "succeeded", "exit_code": 0},
    )
    assert r.status_code == 200 and r.json()["state"] == "succeeded"
    log = w.call("wendy", "GET", f"/api/v1/jobs/{jid}/log")
    assert log.content == b"attempt two\n" and log.headers["X-Job-State"] == "succeeded"
    tail = w.call("wendy", "GET", f"/api/v1/jobs/{jid}/log?offset=8")
    assert tail.content == b"two\n" and tail.headers["X-Log-Size"] == "12"


def test_a_log_is_written_by_offset_and_a_resent_range_is_harmless(jobs_world: World) -> None:
    w = jobs_world
    job = _submit(w)
    token = _claim(w, job["id"], 0)["token"]
    put = lambda data, offset: w.call(  # noqa: E731
        "agnes", "PUT", f"/api/v1/jobs/{job['id']}/log?token={token}&offset={offset}", content=data
    )
    assert put(b"abc", 0).json()["size"] == 3
    assert put(b"abc", 0).json()["size"] == 3  # a retry of the same range
    assert put(b"def", 3).json()["size"] == 6
    gap = put(b"zzz", 10)
    assert gap.status_code == 409 and "from byte 6" in gap.json()["error"]["hint"]
    assert w.call("wendy", "GET", f"/api/v1/jobs/{job['id']}/log").content == b"abcdef"


def test_the_job_token_reads_its_inputs_only_and_never_as_an_org_admin(jobs_world: World) -> None:
    w = jobs_world
    job = _submit(w, "admin", inputs=[{"name": "xray", "dataset": "xray", "ref": "v1"}])
    secret = _claim(w, job["id"], 0)["job_token"]
    auth = {"Authorization": f"Bearer {secret}"}

    def status(method: str, path: str, **kw: Any) -> int:
        return w.call(None, method, path, headers=auth, **kw).status_code

    assert status("GET", "/api/v1/datasets/xray/commits/v1") == 200
    assert status("GET", "/api/v1/datasets/hidden") == 404  # its admin submitter reads it
    listed = w.call(None, "GET", "/api/v1/datasets", headers=auth)
    assert listed.status_code == 403
    assert status("GET", "/api/v1/users") == 403
    assert status("POST", "/api/v1/datasets", json={"name": "fromjob"}) == 403
    assert status("POST", "/api/v1/jobs", json={"queue": "q", "command": ["true"]}) == 403
    assert status("PUT", "/api/v1/datasets/xray/tags/x", json={"ref": "v1"}) == 403
    # A tampered token is nobody.
    bad = {"Authorization": f"Bearer {secret[:-2]}xx"}
    assert w.call(None, "GET", "/api/v1/datasets/xray", headers=bad).status_code == 401


def test_only_the_submitter_or_an_org_admin_cancels_and_others_see_no_job(
    jobs_world: World,
) -> None:
    w = jobs_world
    job = _submit(w)
    path = f"/api/v1/jobs/{job['id']}"
    assert w.call("rita", "GET", path).status_code == 404
    assert w.call("rita", "POST", path + "/cancel").status_code == 404
    assert w.call("agnes", "POST", path + "/cancel").status_code == 403
    r = w.call("admin", "POST", path + "/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    again = w.call("wendy", "POST", path + "/cancel")
    assert again.status_code == 200  # already cancelled: the same answer
    shown = w.call("wendy", "GET", path).json()
    assert [e["kind"] for e in shown["timeline"]] == ["queued", "placed", "cancelled"]
    assert shown["placement"][0]["verdict"] == "chosen"


def test_the_remote_store_answers_a_stale_token_as_the_catalog_does(jobs_world: World) -> None:
    """409 ``taken_over`` reads as the store's own answer for a stale token (``lost``,
    False), which is what makes a runner stop and report nothing."""
    from lakecache.client.connection import ServerConnection
    from lakecache.client.jobs import RemoteJobs

    w = jobs_world
    conn = ServerConnection(w.url, w.tokens["agnes"])
    try:
        remote, now = RemoteJobs(conn), w.plane.clock.now()
        job = remote.get_job(_submit(w)["id"])
        token = remote.claim(job, "w", now=now)
        assert token == 1 and remote.job_token(job.id, 1) is not None
        store = ComputeStore(w.plane.hub.catalog)
        assert store.release(job.id, 1, reason="silent", now=now)
        assert remote.heartbeat(job.id, 1, now=now) == "lost"
        assert remote.record(job.id, 1, "x", "y", now=now) is False
        assert (
            remote.finish(job.id, 1, state="succeeded", exit_code=0, reason=None, now=now) is False
        )
        assert remote.release(job.id, 1, reason="stop", now=now) is False
        assert store.get_job(job.id).state in ("queued", "placed")
    finally:
        conn.close()


def _outputs_tar(*members: tuple[str, bytes | None, str | None]) -> bytes:
    """A tar of (name, bytes) files and (name, None, target) symlinks."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, target in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, target or ""
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_job_token_stores_its_own_jobs_outputs_only_and_the_submitter_reads_them(
    jobs_world: World,
) -> None:
    from lakecache.lake.objects import hash_bytes

    w = jobs_world
    job, other = _submit(w), _submit(w)
    secret = _claim(w, job["id"], 0)["job_token"]
    other_secret = _claim(w, other["id"], 0)["job_token"]
    auth = {"Authorization": f"Bearer {secret}", "Content-Type": "application/x-tar"}
    body = _outputs_tar(
        ("model/w.bin", b"weights", None),
        ("../escaped.txt", b"outside", None),
        ("/etc/abs.txt", b"absolute", None),
        ("passwd", None, "/etc/passwd"),
    )
    path = f"/api/v1/jobs/{job['id']}/outputs"

    # Another job's token may not write this job's outputs; a stale attempt may not either.
    theirs = {**auth, "Authorization": f"Bearer {other_secret}"}
    refused = w.call(None, "PUT", f"{path}?token=1", headers=theirs, content=body)
    assert refused.status_code == 403, refused.text
    stale = w.call(None, "PUT", f"{path}?token=2", headers=auth, content=body)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "taken_over"
    # A person (even the submitter) does not write outputs: only the job or its agent.
    wendy = w.call("wendy", "PUT", f"{path}?token=1", content=body)
    assert wendy.status_code == 403

    stored = w.call(None, "PUT", f"{path}?token=1", headers=auth, content=body)
    assert stored.status_code == 200, stored.text
    out = stored.json()
    assert [f["path"] for f in out["files"]] == ["model/w.bin"]
    assert out["files"][0]["digest"] == hash_bytes(b"weights")
    assert len(out["left_out"]) == 3 and any("passwd" in x for x in out["left_out"])

    # The submitter lists and reads them; someone else sees no job; the job token reads none.
    listed = w.call("wendy", "GET", path)
    assert [f["path"] for f in listed.json()] == ["model/w.bin"]
    got = w.call("wendy", "GET", f"{path}/model/w.bin")
    assert got.status_code == 200 and got.content == b"weights"
    assert got.headers["X-Digest"] == hash_bytes(b"weights")
    assert w.call("wendy", "GET", f"{path}/escaped.txt").status_code == 404
    assert w.call("rita", "GET", path).status_code == 404
    assert w.call(None, "GET", path, headers={"Authorization": f"Bearer {secret}"}).status_code == (
        403
    )
    shown = w.call("wendy", "GET", f"/api/v1/jobs/{job['id']}").json()
    assert (shown["outputs_files"], shown["outputs_bytes"]) == (1, 7)

    # Its agent may send them too (a runner without the job's token); after the end, nobody.
    again = w.call(
        "agnes",
        "PUT",
        f"{path}?token=1",
        content=_outputs_tar(("b.txt", b"bee", None)),
        headers={"Content-Type": "application/x-tar"},
    )
    assert again.status_code == 200 and [f["path"] for f in again.json()["files"]] == ["b.txt"]
    r = w.call(
        "agnes",
        "POST",
        f"/api/v1/jobs/{job['id']}/finish",
        json={"token": 1, "state": "succeeded", "exit_code": 0},
    )
    assert r.status_code == 200
    late = w.call(None, "PUT", f"{path}?token=1", headers=auth, content=body)
    assert late.status_code == 401
    assert [f["path"] for f in w.call("wendy", "GET", path).json()] == ["b.txt"]
