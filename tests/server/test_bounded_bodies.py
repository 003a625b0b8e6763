"""No route reads an unbounded body: a job's log chunk, a run's metrics batch and log, a
run's artifact (our API and MLflow's) and MLflow's JSON requests are refused with 413
past their limit, before reading when ``Content-Length`` says so (the answer comes
while the body is still unsent), else as soon as the body passes it; artifacts are
bounded by ``max_output_bytes`` and nothing of a refused one is kept."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lakecache.settings import Settings
from server.live import World

LIMIT = 32 * 1024


@pytest.fixture(scope="module")
def bounded(
    world_factory: Callable[..., World], tmp_path_factory: pytest.TempPathFactory
) -> tuple[World, int]:
    """A server taking artifacts of LIMIT bytes at most; wendy's tracking run."""
    home = tmp_path_factory.mktemp("bounded") / "home"
    w = world_factory(
        settings=Settings(home=home, workers=4, author="tester", max_output_bytes=LIMIT),
        agents=False,
    )
    r = w.call("wendy", "POST", "/api/v1/tracking/runs", json={"name": "bounded"})
    assert r.status_code == 201, r.text
    return w, r.json()["id"]


def _headers_only(w: World, who: str, method: str, path: str, size: int) -> tuple[int, Any]:
    """Send the request line and headers claiming ``size`` bytes, and no body: a route
    that waited for the body would never answer."""
    conn = http.client.HTTPConnection("127.0.0.1", int(w.url.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.putrequest(method, path)
        conn.putheader("Authorization", f"Bearer {w.tokens[who]}")
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * 65536
        sent += 65536


def _spooled(w: World) -> list[str]:
    root = w.settings.home / "tracking-uploads"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.parametrize(
    ("path", "size", "expected"),
    [
        ("/api/v1/tracking/runs/{run}/logs/output", (4 << 20) + 1, 413),
        ("/api/v1/tracking/runs/{run}/batch", (64 << 20) + 1, 413),
        ("/api/v1/tracking/runs/{run}/artifacts/big.bin", LIMIT + 1, 413),
        # MLflow's clients know its error codes: INVALID_PARAMETER_VALUE is a 400.
        ("/api/2.0/mlflow-artifacts/artifacts/0/{run}/artifacts/big.bin", LIMIT + 1, 400),
        ("/api/2.0/mlflow/runs/log-batch", (64 << 20) + 1, 413),
    ],
)
def test_a_declared_size_over_the_limit_is_refused_before_the_body(
    bounded: tuple[World, int], path: str, size: int, expected: int
) -> None:
    w, run = bounded
    method = "POST" if path.endswith(("batch", "log-batch")) else "PUT"
    status, body = _headers_only(w, "wendy", method, path.format(run=run), size)
    assert status == expected, body
    text = json.dumps(body)
    assert "at most" in text or "max_output_bytes" in text, body
    assert _spooled(w) == []


def test_a_chunked_body_past_the_limit_is_refused_and_nothing_is_kept(
    bounded: tuple[World, int],
) -> None:
    w, run = bounded
    base = f"/api/v1/tracking/runs/{run}"
    r = w.call("wendy", "PUT", f"{base}/artifacts/big.bin", content=_chunks(4 * LIMIT))
    assert r.status_code == 413, r.text
    assert "max_output_bytes" in r.json()["error"]["message"]
    assert _spooled(w) == []
    listed = w.call("wendy", "GET", f"{base}/artifacts").json()
    assert all(a["path"] != "big.bin" for a in listed), listed
    log = w.call("wendy", "PUT", f"{base}/logs/output", content=_chunks((4 << 20) + 65536))
    assert log.status_code == 413 and "at most" in log.json()["error"]["message"]
    assert w.call("wendy", "GET", f"{base}/logs/output").content == b""
    # Within the limits, both are taken.
    ok = w.call("wendy", "PUT", f"{base}/artifacts/small.bin", content=b"y" * 1000)
    assert ok.status_code == 200, ok.text
    assert w.call("wendy", "PUT", f"{base}/logs/output", content=b"hi\n").status_code == 200


def test_a_job_log_chunk_over_its_limit_is_refused_before_the_body(
    bounded: tuple[World, int],
) -> None:
    from lakecache.compute.model import Resources
    from lakecache.compute.store import ComputeStore

    w, _ = bounded
    plane, now = w.plane, w.plane.clock.now()
    plane.topology.add_compute("pool", "local", "local", {}, [], now)
    store = ComputeStore(plane.hub.catalog)
    store.set_capacity("pool", Resources(4000, 10**10))
    store.add_template("t1", "pool", Resources(1000, 10**9), None, now)
    store.add_queue("q", ["t1"], now=now)
    plane.accounts.create_user("agnes", "user-password-1", agent_site="local", now=now)
    _, w.tokens["agnes"] = plane.accounts.create_token("agnes", "site", now=now, expires_at=None)
    job = w.call(
        "wendy",
        "POST",
        "/api/v1/jobs",
        json={"queue": "q", "command": ["true"], "request": {"cpu_milli": 1000}},
    ).json()
    claim = w.call(
        "agnes", "POST", f"/api/v1/jobs/{job['id']}/claim", json={"worker": "w", "attempt": 0}
    )
    assert claim.status_code == 200, claim.text
    path = f"/api/v1/jobs/{job['id']}/log?token=1"
    status, body = _headers_only(w, "agnes", "PUT", path, (4 << 20) + 1)
    assert status == 413 and "a log chunk is at most" in body["error"]["message"], body
    ok = w.call("agnes", "PUT", path, content=b"fine\n")
    assert ok.status_code == 200 and ok.json()["size"] == 5


def test_a_lake_object_over_the_largest_single_put_is_refused_before_the_body(
    bounded: tuple[World, int],
) -> None:
    from lakecache.lake.objects import blob_key

    w, _ = bounded
    key = blob_key("ab" * 32)
    path = f"/api/v1/lake/objects/{key}?dataset=xray"
    status, body = _headers_only(w, "wendy", "PUT", path, (5 << 30) + 1)
    assert status == 413, body
    assert "at most" in body["error"]["message"] and "multipart" in body["error"]["hint"]


def test_a_json_body_is_bounded_before_fastapi_reads_it(bounded: tuple[World, int]) -> None:
    """FastAPI reads a JSON body before any check (authentication included): over 64 MiB
    declared gets 413 at once, even anonymously; a chunked one is cut off at the limit."""
    from lakecache.server.bodies import JSON_MAX

    w, _ = bounded
    conn = http.client.HTTPConnection("127.0.0.1", int(w.url.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.putrequest("POST", "/api/v1/jobs")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(1 << 40))
        conn.endheaders()
        r = conn.getresponse()
        body = json.loads(r.read())
    finally:
        conn.close()
    assert r.status == 413 and body["error"]["code"] == "too_large", body
    assert r.getheader("X-Request-ID") == body["error"]["request_id"] != ""

    def endless() -> Iterator[bytes]:
        yield b'{"queue": "'
        yield from _chunks(JSON_MAX + (1 << 20))

    cut = w.call(
        "wendy",
        "POST",
        "/api/v1/jobs",
        content=endless(),
        headers={"Content-Type": "application/json"},
    )
    assert cut.status_code == 400, cut.text
    # An ordinary JSON request is untouched.
    assert w.call("wendy", "GET", "/api/v1/jobs").status_code == 200
    ok = w.call("wendy", "POST", "/api/v1/tracking/experiments", json={"name": "bounded-json"})
    assert ok.status_code == 201, ok.text
