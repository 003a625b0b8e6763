"""Two ``lakecache server`` replicas on one PostgreSQL and one SeaweedFS lake, behind a
round-robin balancer: one API, sessions and login limits across replicas, and a replica
killed (SIGKILL) in the middle of a cache fill and of a job loses no request beyond a
retry and runs no job twice. The site's agent works through the balancer, as the
chart's agents work through the Service.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.seaweed import drop_bucket, new_bucket

from lakecache.cache.clock import SystemClock
from lakecache.catalog.accounts import Accounts
from lakecache.catalog.db import Catalog
from lakecache.compute.model import Resources
from lakecache.compute.sdk import jobs_store, submit
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.services.postgres import PostgresServer
from lakecache.services.replicas import PASSWORD, ReplicaSet, RoundRobinClient
from lakecache.services.seaweed import SeaweedServer
from lakecache.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.timeout(600)]

GB = 10**9
SITE = "onprem"
AGENT_PASSWORD = "agent-password-123"


@pytest.fixture(scope="module")
def cluster(
    postgres: PostgresServer, seaweed: SeaweedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplicaSet]:
    root = tmp_path_factory.mktemp("replicas")
    bucket = new_bucket(seaweed)
    url = postgres.create_database(f"replicas_{os.getpid()}_{int(time.time())}")
    volume = root / "onprem-volume"
    rs = ReplicaSet.create(
        root,
        catalog_url=url,
        lake_url=f"s3://{bucket}/lake",
        s3={
            "s3_endpoint": seaweed.endpoint,
            "s3_access_key": seaweed.access_key,
            "s3_secret_key": seaweed.secret_key,
        },
        server="login_max_failures = 3\nlogin_max_failures_per_ip = 100",
        sites=(
            f'[[sites]]\nname = "{SITE}"\n'
            f'volumes = [{{ name = "{SITE}-vol", root = "{volume}", capacity = "10GB" }}]\n'
            f'compute = [{{ name = "{SITE}-pool", backend = "local" }}]\n'
        ),
    )
    rs.catalog_url = url  # type: ignore[attr-defined]
    try:
        rs.start_all()
        yield rs
    finally:
        rs.close()
        drop_bucket(seaweed, bucket)


def admin_token(url: str) -> str:
    r = httpx.post(
        f"{url}/api/v1/auth/token",
        json={"name": "admin", "password": PASSWORD, "token_name": "test"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_the_replicas_serve_one_api_with_shared_sessions_and_login_limits(
    cluster: ReplicaSet, tmp_path: Path
) -> None:
    a, b = (r.url for r in cluster.replicas)
    token = admin_token(a)
    headers = {"Authorization": f"Bearer {token}"}
    # A token made on one replica works on the other; a dataset made on one is seen on both.
    r = httpx.post(f"{b}/api/v1/datasets", json={"name": "shared"}, headers=headers)
    assert r.status_code == 201, r.text
    names = [
        sorted(
            d["name"] for d in httpx.get(f"{u}/api/v1/datasets", headers=headers).json()["items"]
        )
        for u in (a, b)
    ]
    assert names[0] == names[1] and "shared" in names[0]
    # A dashboard session started on A is honoured on B, and ended on B it is over on A.
    login = httpx.post(f"{a}/api/v1/auth/login", json={"name": "admin", "password": PASSWORD})
    assert login.status_code == 200
    cookies = {"lakecache_session": login.cookies["lakecache_session"]}
    on_b = httpx.get(f"{b}/api/v1/auth/session", cookies=cookies)
    assert on_b.status_code == 200 and on_b.json()["user"]["name"] == "admin"
    page = httpx.get(f"{b}/", cookies=cookies)
    assert page.status_code == 200 and "shared" in page.text  # the dashboard's dataset list
    csrf = login.json()["csrf_token"]
    out = httpx.post(f"{b}/api/v1/auth/logout", cookies=cookies, headers={"X-CSRF-Token": csrf})
    assert out.status_code == 204, out.text
    assert httpx.get(f"{a}/api/v1/auth/session", cookies=cookies).status_code == 401
    # Failed logins add up across replicas: the limit (3) holds whichever replica is asked.
    codes = [
        httpx.post(
            f"{url}/api/v1/auth/login", json={"name": "mallory", "password": "wrong"}
        ).status_code
        for url in (a, b, a, b, a)
    ]
    assert codes[:3] == [401, 401, 401] and codes[3:] == [429, 429], codes


class Reader(threading.Thread):
    """Paced listing and browsing through the balancer, for as long as the test runs."""

    def __init__(self, url: str, token: str, dataset: str) -> None:
        super().__init__(daemon=True)
        self.client = RoundRobinClient(url, token)
        self.paths = [
            "/api/v1/datasets",
            f"/api/v1/datasets/{dataset}/commits/latest/tree",
            "/api/v1/caches",
        ]
        self.stop = threading.Event()
        self.ok = 0
        self.errors: list[str] = []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            path = self.paths[i % len(self.paths)]
            r = self.client.get(path)
            if r is not None:
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.errors.append(f"{path}: {r.status_code} {r.text[:200]}")
            i += 1
            self.stop.wait(0.05)
        self.client.close()


def wait_for(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_replica_killed_mid_fill_and_mid_job_loses_nothing(
    cluster: ReplicaSet, tmp_path: Path
) -> None:
    url = cluster.url
    token = admin_token(url)
    hub = Hub(Settings(home=tmp_path / "admin", server_url=url, token=token, workers=4))
    agent = None
    reader = None
    try:
        # A dataset big enough that its fill is seen filling (~12 MB in 400 files).
        src = tmp_path / "src"
        for i in range(400):
            folder = src / f"d{i % 8}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"f{i}.bin").write_bytes(os.urandom(30_000))
        Dataset.create("xray", hub=hub).commit(src, "for the replicas")
        store = jobs_store(hub)
        store.set_capacity(f"{SITE}-pool", Resources(2000, 4 * GB))
        now = SystemClock().now()
        store.add_template("small", f"{SITE}-pool", Resources(1000, GB), None, now)
        store.add_queue("q", ["small"], now=now)
        # The site's agent, as its agent user, through the balancer.
        catalog = Catalog.open(cluster.catalog_url)  # type: ignore[attr-defined]
        try:
            accounts = Accounts(catalog)
            accounts.create_user("onprem-agent", AGENT_PASSWORD, agent_site=SITE, now=now)
            _, agent_token = accounts.create_token(
                "onprem-agent", "agent", now=now, expires_at=None
            )
        finally:
            catalog.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAKECACHE_")}
        env |= {
            "LAKECACHE_HOME": str(tmp_path / "agent-home"),
            "LAKECACHE_SERVER": url,
            "LAKECACHE_TOKEN": agent_token,
        }
        agent = subprocess.Popen(
            [sys.executable, "-m", "lakecache", "agent", "--site", SITE, "--interval", "0.2"],
            env=env,
            stdout=open(tmp_path / "agent.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        reader = Reader(url, token, "xray")
        reader.start()
        headers = {"Authorization": f"Bearer {token}"}

        # -- a replica dies while the agent fills the cache through the replicas
        r = httpx.post(f"{url}/api/v1/datasets/xray/caches", json={"site": SITE}, headers=headers)
        assert r.status_code == 202, r.text
        cache_id = r.json()["id"]

        def cache() -> dict[str, Any]:
            for replica in cluster.replicas:  # whichever is up
                try:
                    got = httpx.get(
                        f"{replica.url}/api/v1/caches/{cache_id}", headers=headers, timeout=5
                    )
                    return dict(got.json())
                except httpx.TransportError:
                    continue
            raise AssertionError("no replica answers")

        seen = wait_for("the fill to start", lambda: cache()["state"] != "pending" and cache())
        assert seen["state"] == "filling", f"the fill ended before the kill: {seen['state']}"
        cluster.kill(0)
        done = wait_for(
            "the fill to end", lambda: cache()["state"] in ("ready", "failed") and cache()
        )
        assert done["state"] == "ready", done["error"]
        assert done["files"] == 400
        volume = cluster.root / "onprem-volume"
        assert sum(1 for p in volume.rglob("f*.bin")) >= 400

        # -- replica 0 is back; now replica 1 dies while a job runs
        cluster.start(0)
        runs = tmp_path / "runs.txt"
        code = (
            "import pathlib, sys, time; "
            f"p = pathlib.Path({str(runs)!r}); "
            "p.open('a').write('ran\\n'); time.sleep(4); print('done')"
        )
        job = submit([sys.executable, "-c", code], queue="q", hub=hub)
        wait_for("the job to run", lambda: runs.exists())
        cluster.kill(1)
        final = job.wait(timeout=120)
        assert final.state == "succeeded", final.reason
        assert runs.read_text() == "ran\n", "the job ran more than once"
        assert final.attempt == 1
        cluster.start(1)

        reader.stop.set()
        reader.join(timeout=30)
        assert reader.client.lost == [], reader.client.lost
        assert reader.errors == [], reader.errors[:5]
        assert reader.ok > 20
        assert reader.client.retried >= 0
    finally:
        if reader is not None:
            reader.stop.set()
        if agent is not None:
            agent.terminate()
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
        hub.close()
        for i, replica in enumerate(cluster.replicas):
            if replica.process is None or replica.process.poll() is not None:
                cluster.start(i)
