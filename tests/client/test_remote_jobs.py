"""Jobs through a live server: submit, a remote site agent runs them, logs follow, cancel.

A person logged in submits (``lakecache.submit``, ``lakecache job run``); a site
agent logged in as that site's agent user runs the job with the very
:class:`~lakecache.compute.runner.JobRunner` of direct mode, through
:class:`~lakecache.client.jobs.RemoteJobs`: no catalog and no lake credentials
on either machine. The job gets a job-scoped token, never the agent's. Each
test runs on a folder lake and on a SeaweedFS lake (see ``conftest.py``).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from server.live import PASSWORD

from client.world import LakeWorld
from lakecache.cache.clock import SystemClock
from lakecache.cache.service import CacheService
from lakecache.client import AccessDeniedError
from lakecache.client.jobs import RemoteJobs
from lakecache.compute.model import Resources
from lakecache.compute.runner import JobRunner
from lakecache.compute.sdk import Job, jobs_store, log_chunks, submit
from lakecache.data.hub import Hub
from lakecache.errors import NotFoundError, UserError

GB = 10**9


class Site:
    """A site made over the API with a volume mounted here, a local pool of 2 CPUs, a
    template, a queue, and an agent user whose runner runs in a thread."""

    def __init__(self, lake_world: LakeWorld, tmp_path: Path) -> None:
        self.lw = lake_world
        self.name = f"js-{uuid.uuid4().hex[:6]}"
        self.queue = f"{self.name}-q"
        self.tmp = tmp_path
        admin = lake_world.hub("admin", tmp_path / "admin-home")
        try:
            topo = CacheService(admin).topology
            topo.add_site(self.name, "a job site made in a test")
            (tmp_path / "vol").mkdir()
            topo.add_volume(self.name, self.name, str(tmp_path / "vol"), 10 * GB, 86400)
            topo.add_compute(f"{self.name}-pool", self.name, "local", {}, [])
            store = jobs_store(admin)
            assert isinstance(store, RemoteJobs)
            store.set_capacity(f"{self.name}-pool", Resources(2000, 4 * GB))
            now = SystemClock().now()
            store.add_template(
                f"{self.name}-small", f"{self.name}-pool", Resources(1000, GB), None, now
            )
            store.add_queue(self.queue, [f"{self.name}-small"], now=now)
        finally:
            admin.close()
        plane = lake_world.world.plane
        now = plane.clock.now()
        self.agent_user = f"agent-{self.name}"
        plane.accounts.create_user(self.agent_user, PASSWORD, agent_site=self.name, now=now)
        _, self.agent_token = plane.accounts.create_token(
            self.agent_user, "site", now=now, expires_at=None
        )
        self.agent_hub = Hub(
            lake_world.settings("admin", tmp_path / "agent-home").with_(token=self.agent_token)
        )
        self.runner = JobRunner(
            CacheService(self.agent_hub, clock=SystemClock(), poll_every=0.05),
            self.name,
            interval=0.05,
            heartbeat_every=0.2,
            jobs_root=tmp_path / "jobs",
        )
        self.thread = threading.Thread(target=self.runner.run_forever, daemon=True)

    def close(self) -> None:
        self.runner.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)
        self.agent_hub.close()


@pytest.fixture
def site(lake_world: LakeWorld, tmp_path: Path) -> Iterator[Site]:
    s = Site(lake_world, tmp_path)
    yield s
    s.close()


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


# What the job runs: it reads its input, asks the server with the token it was given,
# and prints slowly, so that a follower sees lines before it ends.
_PROBE = """
import json, os, pathlib, sys, time, urllib.request, urllib.error
def get(path):
    req = urllib.request.Request(os.environ["LAKECACHE_SERVER"] + "/api/v1" + path,
        headers={"Authorization": "Bearer " + os.environ["LAKECACHE_TOKEN"]})
    try:
        return urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        return e.code
root = pathlib.Path(os.environ["LAKECACHE_INPUT_XRAY"])
report = {
    "token": os.environ["LAKECACHE_TOKEN"],
    "readme": (root / "docs" / "readme.txt").read_text(),
    "input": get("/datasets/xray"),
    "input_file": get("/datasets/xray/commits/v1/files/docs/readme.txt"),
    "other": get("/datasets/hidden"),
    "users": get("/users"),
    "new_dataset": None,
}
print("first line", flush=True)
time.sleep(1.5)
print(json.dumps(report), flush=True)
time.sleep(0.5)
print("last line", flush=True)
"""


def test_submit_through_the_server_a_remote_agent_runs_it_and_the_log_follows(
    lake_world: LakeWorld, site: Site, tmp_path: Path
) -> None:
    hub = lake_world.hub("admin", tmp_path / "alice-home")
    try:
        job = submit(
            _py(_PROBE),
            queue=site.queue,
            inputs=["xray@v1:stream"],
            hub=hub,
        )
        assert isinstance(job._store, RemoteJobs)
        rec = job.record
        assert rec.state == "placed" and rec.site == site.name and rec.submitted_by == "admin"
        assert rec.placement[0].verdict == "chosen"
        assert rec.inputs[0].commit_id == lake_world.world.commits["v1"]
        site.thread.start()

        # Follow the log through the server while the job runs.
        seen: list[tuple[bytes, str]] = []
        store = jobs_store(hub)
        for chunk in log_chunks(store, job.id, follow=True, poll=0.05):
            seen.append((chunk, job.state))
        text = b"".join(c for c, _ in seen).decode()
        assert text.startswith("first line\n") and text.rstrip().endswith("last line")
        # The first line came while the job still ran: streamed, not read after the end.
        assert seen[0][0].startswith(b"first line") and seen[0][1] == "running"

        final = job.wait(timeout=30)
        assert final.state == "succeeded" and final.exit_code == 0, final.reason
        report = json.loads(text.splitlines()[1])
        assert report["readme"] == "hello\n"  # v1's file, streamed with the job's own token
        # The job's token reads its input, and nothing else: not another dataset its
        # submitter (an org admin) may read, not the admin's routes.
        assert report["input"] == 200 and report["input_file"] == 200
        assert report["other"] == 404
        assert report["users"] == 403
        assert report["token"].startswith("lcj_")
        assert report["token"] not in (site.agent_token, lake_world.world.tokens["admin"])
        # It expired with the job.
        r = lake_world.call(
            None,
            "GET",
            "/api/v1/datasets/xray",
            headers={"Authorization": f"Bearer {report['token']}"},
        )
        assert r.status_code == 401

        kinds = [e.kind for e in job.timeline]
        assert kinds[:2] == ["queued", "placed"]
        assert {"claimed", "preparing", "data ready", "started", "succeeded"} <= set(kinds)
        assert "first line" in job.logs()
    finally:
        hub.close()


def test_a_cached_input_is_filled_at_the_site_by_its_agent_and_the_job_reads_it(
    lake_world: LakeWorld, site: Site, tmp_path: Path
) -> None:
    hub = lake_world.hub("wendy", tmp_path / "wendy-home")
    try:
        code = (
            "import os, pathlib; p = pathlib.Path(os.environ['LAKECACHE_INPUT_XRAY']); "
            "print(p); print(sorted(x.name for x in p.iterdir()))"
        )
        job = submit(_py(code), queue=site.queue, inputs=["xray@v1"], hub=hub)
        site.thread.start()
        final = job.wait(timeout=60)
        assert final.state == "succeeded", final.reason
        first, listing = job.logs().splitlines()[:2]
        # The cache the agent filled on its site's volume, not a copy of the job's own.
        assert first.startswith(str(tmp_path / "vol")) and "docs" in listing
        caches = CacheService(hub).topology.list_caches(dataset="xray")
        assert any(c.site == site.name and c.state == "ready" for c in caches)
    finally:
        hub.close()


def test_cancel_through_the_server_stops_the_running_job(
    lake_world: LakeWorld, site: Site, tmp_path: Path
) -> None:
    hub = lake_world.hub("wendy", tmp_path / "wendy-home")
    rita = lake_world.hub("rita", tmp_path / "rita-home")
    nora = lake_world.hub("nora", tmp_path / "nora-home")
    try:
        job = submit(
            _py("import time; print('up', flush=True); time.sleep(60)"), queue=site.queue, hub=hub
        )
        site.thread.start()
        wait = time.monotonic() + 30
        while job.state != "running" or "up" not in job.logs():
            assert time.monotonic() < wait
            time.sleep(0.05)
        # Someone else's job: rita sees nothing of it, nora neither (the same 404 as none).
        with pytest.raises(NotFoundError):
            Job(job.id, hub=rita)
        with pytest.raises(NotFoundError):
            jobs_store(nora).cancel(job.id, now=SystemClock().now())
        t0 = time.monotonic()
        job.cancel()
        final = job.wait(timeout=15)
        assert final.state == "cancelled" and time.monotonic() - t0 < 10
        assert site.runner.wait_idle(10)
        assert not site.runner.running()
    finally:
        hub.close()
        rita.close()
        nora.close()


def test_submit_refusals_say_why_through_the_server(
    lake_world: LakeWorld, site: Site, tmp_path: Path
) -> None:
    hub = lake_world.hub("wendy", tmp_path / "wendy-home")
    nora = lake_world.hub("nora", tmp_path / "nora-home")
    try:
        with pytest.raises(NotFoundError) as unknown_queue:
            submit(["true"], queue="no-such-queue", hub=hub)
        assert "queue ls" in (unknown_queue.value.hint or "")
        with pytest.raises(UserError) as too_big:
            submit(["true"], queue=site.queue, cpu=64, hub=hub)
        assert "larger than every template" in too_big.value.message
        with pytest.raises(NotFoundError):
            submit(["true"], queue=site.queue, inputs=["xray@no-such-tag"], hub=hub)
        # nora may not read xray: the same answer as for a dataset that does not exist.
        with pytest.raises(NotFoundError) as hidden:
            submit(["true"], queue=site.queue, inputs=["xray@v1"], hub=nora)
        assert "no dataset named" in hidden.value.message
        # The agent user runs jobs; it submits none.
        with pytest.raises(AccessDeniedError):
            submit(["true"], queue=site.queue, hub=site.agent_hub)
    finally:
        hub.close()
        nora.close()


@pytest.fixture
def cli(
    lake_world: LakeWorld,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., tuple[int, str]]:
    """Run the CLI in-process as a user of the server: (exit code, stdout)."""
    from lakecache.cli.main import main

    for k in list(os.environ):
        if k.startswith(("LAKECACHE_", "AWS_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("LAKECACHE_SERVER", lake_world.url)

    def run(who: str, *args: str) -> tuple[int, str]:
        monkeypatch.setenv("LAKECACHE_HOME", str(tmp_path / f"home-{who}"))
        monkeypatch.setenv("LAKECACHE_TOKEN", lake_world.world.tokens[who])
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out + err

    return run


def test_cli_job_commands_through_the_server(
    lake_world: LakeWorld, site: Site, cli: Callable[..., tuple[int, str]]
) -> None:
    code, out = cli("admin", "compute", "ls", "--json")
    assert code == 0, out
    pool = next(r for r in json.loads(out) if r["name"] == f"{site.name}-pool")
    assert pool["capacity"]["cpu"] == 2 and pool["used"]["cpu"] == 0
    code, out = cli("rita", "template", "ls", "--json")
    assert code == 0 and f"{site.name}-small" in {t["name"] for t in json.loads(out)}
    # Templates and queues are the org admins'.
    code, out = cli("wendy", "queue", "add", "mine", "-t", f"{site.name}-small")
    assert code != 0 and "org admin" in out

    code, out = cli(
        "wendy",
        "job",
        "run",
        "-q",
        site.queue,
        "--json",
        "--",
        sys.executable,
        "-c",
        "print('hello from the cli')",
    )
    assert code == 0, out
    job_id = json.loads(out)["id"]
    code, out = cli("wendy", "queue", "ls", "--json")
    row = next(q for q in json.loads(out) if q["name"] == site.queue)
    assert row["running"] == 1  # placed, waiting for the agent
    site.thread.start()
    code, out = cli("wendy", "job", "logs", "-f", str(job_id))
    assert code == 0 and out == "hello from the cli\n"
    code, out = cli("wendy", "job", "show", str(job_id), "--json")
    shown = json.loads(out)
    assert shown["state"] == "succeeded" and shown["site"] == site.name
    assert [e["kind"] for e in shown["timeline"]][:2] == ["queued", "placed"]
    code, out = cli("wendy", "job", "ls", "--json")
    assert job_id in {j["id"] for j in json.loads(out)}
    # rita lists her own jobs only; an org admin lists everyone's.
    code, out = cli("rita", "job", "ls", "--json")
    assert job_id not in {j["id"] for j in json.loads(out)}
    code, out = cli("admin", "job", "ls", "--json")
    assert job_id in {j["id"] for j in json.loads(out)}
    code, out = cli("wendy", "job", "cancel", str(job_id))
    assert code != 0 and "already succeeded" in out


def test_an_agent_user_takes_only_its_own_sites_jobs(
    lake_world: LakeWorld, site: Site, tmp_path: Path
) -> None:
    plane = lake_world.world.plane
    now = plane.clock.now()
    plane.accounts.create_user(f"x-{site.name}", PASSWORD, agent_site="local", now=now)
    _, other = plane.accounts.create_token(f"x-{site.name}", "t", now=now, expires_at=None)
    r = lake_world.call(
        None,
        "GET",
        f"/api/v1/sites/{site.name}/placed-jobs",
        headers={"Authorization": f"Bearer {other}"},
    )
    assert r.status_code == 403


def test_outputs_go_to_the_lake_through_the_server_and_come_back_verified(
    lake_world: LakeWorld, site: Site, tmp_path: Path
) -> None:
    """The remote agent sends the job's outputs with the job's own token; the submitter
    lists and downloads them through the server (no lake credentials on either side)."""
    hub = lake_world.hub("wendy", tmp_path / "wendy-home")
    secret = tmp_path / "agent-only.txt"
    secret.write_text("the agent machine's file")
    code = (
        "import os, pathlib; o = pathlib.Path(os.environ['LAKECACHE_OUTPUTS']); "
        "(o / 'model').mkdir(); (o / 'model' / 'w.bin').write_bytes(bytes(range(256)) * 64); "
        "(o / 'metrics.json').write_text('{\"acc\": 0.9}'); "
        f"(o / 'stolen').symlink_to({str(secret)!r})"
    )
    try:
        job = submit(_py(code), queue=site.queue, hub=hub)
        site.thread.start()
        final = job.wait(timeout=60)
        assert final.state == "succeeded", final.reason
        assert (final.outputs_files, final.outputs_bytes) == (2, 256 * 64 + 12)
        assert [f.path for f in job.outputs()] == ["metrics.json", "model/w.bin"]
        event = next(e for e in job.timeline if e.kind == "outputs")
        assert "stolen (a symbolic link" in event.detail
        written = job.download_outputs(tmp_path / "got")
        assert len(written) == 2
        assert (tmp_path / "got" / "model" / "w.bin").read_bytes() == bytes(range(256)) * 64
        assert (tmp_path / "got" / "metrics.json").read_text() == '{"acc": 0.9}'
        assert not (tmp_path / "got" / "stolen").exists()
    finally:
        hub.close()


def test_a_batch_through_the_server_is_queued_all_or_none_and_runs(
    lake_world: LakeWorld, site: Site, tmp_path: Path
) -> None:
    from lakecache.compute.sdk import submit_many

    hub = lake_world.hub("admin", tmp_path / "batch-home")
    try:
        refused = [{"command": ["true"], "queue": q} for q in (site.queue, "nope")]
        with pytest.raises(UserError, match="job 2 of 2: no queue 'nope'"):
            submit_many(refused, hub=hub)
        store = jobs_store(hub)
        before = {j.id for j in store.list_jobs()}
        jobs = submit_many(
            [{"command": ["sh", "-c", f"echo n={n}"], "queue": site.queue} for n in range(3)],
            hub=hub,
        )
        assert {j.id for j in store.list_jobs()} - before == {j.id for j in jobs}
        # Two 1-CPU slots: the first two placed at once, in order; the third waits.
        assert [j.record.state for j in jobs] == ["placed", "placed", "queued"]
        site.thread.start()
        for n, j in enumerate(jobs):
            done = j.wait(timeout=120)
            assert (done.state, done.submitted_by) == ("succeeded", "admin")
            assert f"n={n}" in j.logs()
    finally:
        hub.close()
