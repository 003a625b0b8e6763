"""Job outputs sent to a server are bounded by its ``max_output_bytes``.

A live server whose limit is 64 KiB: a ``Content-Length`` over it is refused
(413, naming the setting) before anything is written; a chunked body that grows
past it is stopped midway and its spool removed; a declared size the server's
disk cannot hold is refused (507); the unpacked files are bounded as well. A
remote agent whose job writes too much records the refusal on the job's
timeline, and the job fails with that reason; the agent goes on with the next.
"""

from __future__ import annotations

import http.client
import io
import json
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.test_remote_jobs import Site
from client.world import LakeWorld, make_lake_world
from lakecache.compute.outputs import unpack_tar
from lakecache.compute.sdk import submit
from lakecache.errors import TooLargeError
from lakecache.settings import Settings

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def lake_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LakeWorld]:
    """A server on a folder lake that takes at most LIMIT bytes of outputs per attempt."""
    base = tmp_path_factory.mktemp("limit-world")
    settings = Settings(home=base / "home", workers=4, author="tester", max_output_bytes=LIMIT)
    lw = make_lake_world(base, settings, "local", [])
    try:
        yield lw
    finally:
        lw.world.server.stop()
        lw.world.plane.close()


@pytest.fixture
def site(lake_world: LakeWorld, tmp_path: Path) -> Iterator[Site]:
    s = Site(lake_world, tmp_path)
    yield s
    s.close()


def _tar(name: str, size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, io.BytesIO(b"x" * size))
    return buf.getvalue()


def _running_job(lw: LakeWorld, site: Site) -> tuple[int, dict[str, str]]:
    """A job of wendy's, claimed by the site's agent: (id, headers with its job token)."""
    r = lw.call(
        "wendy",
        "POST",
        "/api/v1/jobs",
        json={"queue": site.queue, "command": ["true"], "request": {"cpu_milli": 1000}},
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    claim = lw.call(
        None,
        "POST",
        f"/api/v1/jobs/{job_id}/claim",
        json={"worker": "w", "attempt": 0},
        headers={"Authorization": f"Bearer {site.agent_token}"},
    )
    assert claim.status_code == 200 and claim.json()["token"] == 1, claim.text
    secret = claim.json()["job_token"]
    return job_id, {"Authorization": f"Bearer {secret}", "Content-Type": "application/x-tar"}


def _spool(lw: LakeWorld) -> list[Path]:
    root = lw.world.settings.home / "job-outputs-tmp"
    return sorted(root.iterdir()) if root.exists() else []


def _error(r: Any) -> dict[str, str]:
    err: dict[str, str] = r.json()["error"]
    return err


def test_a_declared_size_over_the_limit_is_refused_before_a_byte_is_written(
    lake_world: LakeWorld, site: Site
) -> None:
    job_id, auth = _running_job(lake_world, site)
    path = f"/api/v1/jobs/{job_id}/outputs?token=1"
    r = lake_world.call(None, "PUT", path, headers=auth, content=_tar("big.bin", LIMIT + 1))
    assert r.status_code == 413, r.text
    err = _error(r)
    assert err["code"] == "too_large"
    assert "max_output_bytes" in err["message"] and str(LIMIT) in err["message"]
    assert "LAKECACHE_MAX_OUTPUT_BYTES" in err["hint"]
    assert _spool(lake_world) == []
    assert lake_world.call("wendy", "GET", f"/api/v1/jobs/{job_id}/outputs").json() == []
    # Under the limit, the same attempt stores its outputs.
    ok = lake_world.call(None, "PUT", path, headers=auth, content=_tar("small.bin", 1000))
    assert ok.status_code == 200, ok.text
    assert [f["path"] for f in ok.json()["files"]] == ["small.bin"]
    assert _spool(lake_world) == []


def test_a_chunked_body_growing_past_the_limit_is_stopped_and_its_spool_removed(
    lake_world: LakeWorld, site: Site
) -> None:
    job_id, auth = _running_job(lake_world, site)
    body = _tar("big.bin", 4 * LIMIT)
    sent = []

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        for i in range(0, len(body), 8192):
            sent.append(i)
            yield body[i : i + 8192]

    r = lake_world.call(
        None, "PUT", f"/api/v1/jobs/{job_id}/outputs?token=1", headers=auth, content=chunks()
    )
    assert r.status_code == 413, r.text
    assert "more than" in _error(r)["message"] and "max_output_bytes" in _error(r)["message"]
    assert _spool(lake_world) == []
    assert lake_world.call("wendy", "GET", f"/api/v1/jobs/{job_id}/outputs").json() == []


def test_a_declared_size_the_disk_cannot_hold_is_refused_with_507(
    lake_world: LakeWorld, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, auth = _running_job(lake_world, site)
    # Lift the limit for this request: the disk is what refuses (a petabyte is never free).
    plane = lake_world.world.plane
    monkeypatch.setattr(plane.hub, "settings", plane.hub.settings.with_(max_output_bytes=2**60))
    conn = http.client.HTTPConnection("127.0.0.1", int(lake_world.url.rsplit(":", 1)[1]))
    try:
        conn.putrequest("PUT", f"/api/v1/jobs/{job_id}/outputs?token=1")
        for key, value in auth.items():
            conn.putheader(key, value)
        conn.putheader("Content-Length", str(2**50))
        conn.endheaders()  # the body never comes: the answer must not wait for it
        r = conn.getresponse()
        body = json.loads(r.read())
    finally:
        conn.close()
    assert r.status == 507, body
    assert body["error"]["code"] == "insufficient_storage"
    message = body["error"]["message"]
    assert (
        f"{2 * 2**50} bytes free" in message and str(lake_world.world.settings.home) not in message
    )
    assert _spool(lake_world) == []


def test_unpacking_is_bounded_too(tmp_path: Path) -> None:
    """A tar's members may unpack to more than the tar (sparse members): counted as written."""
    with pytest.raises(TooLargeError, match="max_output_bytes"):
        unpack_tar(io.BytesIO(_tar("a.bin", 5000)), tmp_path / "out", max_bytes=4096)
    scan = unpack_tar(io.BytesIO(_tar("a.bin", 4096)), tmp_path / "ok", max_bytes=4096)
    assert [f.path for f in scan.files] == ["a.bin"]


def test_a_remote_agent_records_the_refusal_and_the_job_fails_saying_why(
    lake_world: LakeWorld, site: Site, tmp_path: Path
) -> None:
    hub = lake_world.hub("wendy", tmp_path / "wendy-home")
    big = (
        "import os, pathlib; o = pathlib.Path(os.environ['LAKECACHE_OUTPUTS']); "
        f"(o / 'big.bin').write_bytes(b'x' * {2 * LIMIT})"
    )
    small = (
        "import os, pathlib; o = pathlib.Path(os.environ['LAKECACHE_OUTPUTS']); "
        "(o / 'ok.txt').write_text('fine')"
    )
    try:
        job = submit([sys.executable, "-c", big], queue=site.queue, hub=hub)
        site.thread.start()
        final = job.wait(timeout=120)
        assert final.state == "failed"
        assert final.reason is not None and "max_output_bytes" in final.reason
        lost = [e for e in job.timeline if e.kind == "outputs lost"]
        assert len(lost) == 1 and "max_output_bytes" in lost[0].detail
        assert job.outputs() == []
        assert _spool(lake_world) == []
        # The agent goes on: the next job's outputs are stored.
        after = submit([sys.executable, "-c", small], queue=site.queue, hub=hub)
        done = after.wait(timeout=120)
        assert done.state == "succeeded", done.reason
        assert [f.path for f in after.outputs()] == ["ok.txt"]
    finally:
        hub.close()
