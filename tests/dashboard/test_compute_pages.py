"""The compute pages in real headless Chromium, over jobs that really run.

A server of its own (this module's ``cw``): sites ``onprem`` (2 CPUs, a GPU, two
``licence`` units) and ``cloud`` (4 CPUs), each with a ``local`` compute
resource and a cache volume, and ``edge`` (a resource with no capacity set and no
agent); queue ``burst`` tries ``onprem-small`` then ``cloud-small``. Two
:class:`~lakecache.compute.runner.JobRunner` threads, one per site of the queue, run
the jobs as real processes, as a site's agent does. ``wendy``
reads dataset ``scans``; ``nora`` is another user. Jobs wait for a stop file,
so a test decides when each ends. Screenshots go to test-artifacts/dashboard/.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import write
from server.live import LiveServer, wait_for

from dashboard.drive import ADMIN_PASSWORD, PASSWORD, log_in, overflow_x, shot
from dashboard.test_pages import _Markup
from lakecache.compute.model import Resources
from lakecache.compute.runner import JobRunner
from lakecache.compute.store import ComputeStore
from lakecache.compute.tokens import JobTokens
from lakecache.data.dataset import Dataset
from lakecache.data.hub import Hub
from lakecache.server import ControlPlane, ServerConfig, create_app
from lakecache.server.config import ComputeSpec, SiteSpec, VolumeSpec
from lakecache.settings import Settings

pytestmark = pytest.mark.usefixtures("browser")
GB = 10**9
#: Playwright's wait for what a running job changes (the runners poll every 50 ms).
LIVE_MS = 30_000


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


@dataclass
class ComputeWorld:
    url: str
    base: Path
    plane: ControlPlane
    server: LiveServer
    runners: list[JobRunner]
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as c:
            return c.request(method, path, **kw)

    def submit(self, who: str, command: list[str], **extra: Any) -> dict[str, Any]:
        body = {"queue": "burst", "command": command, "request": {"cpu_milli": 1000}, **extra}
        r = self.call(who, "POST", "/api/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    def job(self, job_id: int) -> dict[str, Any]:
        out: dict[str, Any] = self.call("admin", "GET", f"/api/v1/jobs/{job_id}").json()
        return out

    def stop_file(self, name: str) -> Path:
        return self.base / "stops" / name


def waiting_job(stop: Path, lines: int = 0, go: Path | None = None) -> list[str]:
    """A command that prints ``lines`` numbered lines; then, given ``go``, waits for that
    file and prints five more; then waits for ``stop``."""
    script = (
        'i=1; while [ "$i" -le "$1" ]; do echo "line $i of the log"; i=$((i+1)); done; '
        'if [ -n "$2" ]; then echo "waiting for go"; while [ ! -e "$2" ]; do sleep 0.05; done; '
        'for i in 1 2 3 4 5; do echo "resumed $i"; done; fi; '
        'echo "waiting for $0"; while [ ! -e "$0" ]; do sleep 0.05; done; echo finished'
    )
    return ["sh", "-c", script, str(stop), str(lines), str(go or "")]


@pytest.fixture(scope="module")
def cw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComputeWorld]:
    base = tmp_path_factory.mktemp("compute-dash")
    settings = Settings(home=base / "home", workers=2, author="tester")
    hub = Hub(settings)
    try:
        src = base / "src"
        for i in range(5):
            write(src, f"part-{i}.txt", f"row {i}\n".encode() * 50, age=10)
        ds = Dataset.create("scans", hub=hub, description="Five small files")
        ds.commit(src, "first")
        ds.tag("v1")
    finally:
        hub.close()
    sites = tuple(
        SiteSpec(
            name,
            description,
            volumes=(VolumeSpec(f"{name}-nvme", str(base / f"cache-{name}"), 50 * 10**6, 3600),),
            compute=(ComputeSpec(f"{name}-local", "local"),),
        )
        for name, description in (
            ("onprem", "the basement cluster"),
            ("cloud", "eu-west"),
            ("edge", "no agent, no capacity"),
        )
    )
    for name in ("onprem", "cloud", "edge"):
        (base / f"cache-{name}").mkdir()
    (base / "stops").mkdir()
    config = ServerConfig(admin_password=ADMIN_PASSWORD, agent_interval=0.05, sites=sites)
    plane = ControlPlane.open(settings, config)
    now = plane.clock.now()
    store = ComputeStore(plane.hub.catalog)
    store.set_capacity("onprem-local", Resources(2000, 4 * GB, 1, {"licence": 2}))
    store.set_capacity("cloud-local", Resources(4000, 8 * GB))
    store.add_template(
        "onprem-small", "onprem-local", Resources(1000, GB, 0, {"licence": 1}), None, now
    )
    store.add_template("cloud-small", "cloud-local", Resources(1000, GB), None, now)
    store.add_queue("burst", ["onprem-small", "cloud-small"], now=now)
    tokens = {}
    for name in ("wendy", "nora"):
        plane.accounts.create_user(name, PASSWORD, now=now)
    plane.accounts.set_member("scans", "wendy", "reader", now=now)
    for name in ("admin", "wendy", "nora"):
        _, tokens[name] = plane.accounts.create_token(
            name, "tests", now=now, expires_at=now + timedelta(days=1)
        )
    server = LiveServer(create_app(settings, config, plane=plane))
    runners = [
        JobRunner(
            plane.caches(),
            site,
            interval=0.05,
            heartbeat_every=0.2,
            jobs_root=base / f"jobs-{site}",
        )
        for site in ("onprem", "cloud")
    ]
    threads = [threading.Thread(target=r.run_forever, daemon=True) for r in runners]
    for t in threads:
        t.start()
    world = ComputeWorld(server.url, base, plane, server, runners, tokens)
    try:
        yield world
    finally:
        for r in runners:
            r.stop_event.set()
        for t in threads:
            t.join(timeout=60)
        server.stop()
        plane.close()


@pytest.fixture
def cpage(browser: Any, cw: ComputeWorld, console: list[str]) -> Iterator[Any]:
    """A fresh browser context on this module's server; fails on any script or console error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=cw.url)
    context.set_default_timeout(30_000)  # this machine is shared and often loaded
    pg = context.new_page()
    pg.on("pageerror", lambda exc: console.append(f"{pg.url}: {exc}"))
    pg.on(
        "console",
        lambda msg: console.append(f"{pg.url}: {msg.text}") if msg.type == "error" else None,
    )
    yield pg
    context.close()
    assert not console, f"the page logged errors: {console}"


def _bar(page: Any, compute: str, dim: str) -> Any:
    return page.locator(f'[data-compute="{compute}"] [data-dim="{dim}"] [role="progressbar"]')


def _finish(cw: ComputeWorld, *jobs: tuple[dict[str, Any], Path], state: str = "succeeded") -> None:
    for _, stop in jobs:
        stop.touch()
    for job, _ in jobs:
        wait_for(lambda j=job: cw.job(j["id"])["state"] == state, timeout=60)


def test_capacity_fills_and_frees_as_jobs_run_and_burst_to_the_cloud(
    cpage: Any, cw: ComputeWorld, artifacts: Path
) -> None:
    page = cpage
    log_in(page, "wendy", PASSWORD)
    page.get_by_role("link", name="Compute", exact=True).click()
    expect(page.get_by_role("heading", name="Compute", level=1)).to_be_visible()
    expect(page.get_by_role("link", name="Compute", exact=True)).to_have_attribute(
        "aria-current", "page"
    )
    cpu = _bar(page, "onprem-local", "cpu")
    expect(cpu).to_have_attribute("aria-valuenow", "0")
    expect(cpu).to_have_attribute("aria-valuetext", "CPU: 0 cores of 2 cores used, 2 cores free")
    # Every kind of resource of onprem gets its bar; cloud has no GPU, so no GPU bar.
    for dim in ("memory", "gpu", "res-licence"):
        expect(_bar(page, "onprem-local", dim)).to_have_count(1)
    expect(_bar(page, "cloud-local", "gpu")).to_have_count(0)
    templates = page.locator('[data-compute="onprem-local"] table.templates')
    expect(templates).to_contain_text("onprem-small")
    expect(templates).to_contain_text("1 core, 1 GB, licence 1")
    queue = page.locator('tr[data-queue="burst"]')
    expect(queue.locator("ol.queue-order li")).to_have_text(
        ["onprem-small (onprem-local at onprem)", "cloud-small (cloud-local at cloud)"]
    )
    expect(page.locator("#no-active-jobs")).to_be_visible()
    # A site whose job agent runs says so; one without, and without capacity, too.
    agent = page.locator('[data-site="onprem"] [data-field="agent"]')
    expect(agent).to_have_attribute("data-up", "true", timeout=LIVE_MS)
    expect(agent).to_contain_text("Job agent up")
    edge = page.locator('[data-site="edge"]')
    expect(edge.locator('[data-field="agent"]')).to_have_attribute("data-up", "false")
    expect(edge.locator('[data-field="agent"]')).to_contain_text("No job agent (never seen)")
    expect(edge.locator('[data-field="no-capacity"]')).to_contain_text("No capacity set")
    expect(queue.locator('td[data-label="Job time limit"]')).to_have_text("none")
    expect(queue.locator('td[data-label="Site without agent"]')).to_have_text("wait")

    # Two jobs fill onprem (2 CPUs, 2 licences); the third bursts to the cloud.
    jobs = []
    for i in range(3):
        stop = cw.stop_file(f"capacity-{i}")
        jobs.append((cw.submit("wendy", waiting_job(stop)), stop))
    assert [j["site"] for j, _ in jobs] == ["onprem", "onprem", "cloud"]
    expect(cpu).to_have_attribute("aria-valuenow", "100", timeout=LIVE_MS)
    expect(cpu).to_have_attribute("aria-valuetext", "CPU: 2 cores of 2 cores used, 0 cores free")
    expect(_bar(page, "onprem-local", "res-licence")).to_have_attribute("aria-valuenow", "100")
    expect(_bar(page, "onprem-local", "memory")).to_have_attribute("aria-valuenow", "50")
    expect(_bar(page, "cloud-local", "cpu")).to_have_attribute("aria-valuenow", "25")
    expect(page.locator('[data-compute="onprem-local"] [data-field="jobs"]')).to_have_text(
        "2 jobs placed or running"
    )
    rows = page.locator("#active-jobs tbody tr")
    expect(rows).to_have_count(3, timeout=LIVE_MS)
    for job, _ in jobs:
        row = page.locator(f'#active-jobs tr[data-job="{job["id"]}"]')
        expect(row.locator('[data-field="state"]')).to_have_text("running", timeout=LIVE_MS)
        expect(row.get_by_role("link", name=f"Job {job['id']}")).to_have_attribute(
            "href", f"/jobs/{job['id']}"
        )
    expect(page.locator(f'#active-jobs tr[data-job="{jobs[2][0]["id"]}"]')).to_contain_text(
        "cloud-small (cloud-local at cloud)"
    )
    expect(queue.locator('[data-field="running"]')).to_have_text("3")
    shot(page, artifacts, "compute-01-full-and-bursting")

    # The burst job's page says why: onprem was full, so the cloud's template was chosen.
    page.get_by_role("link", name=f"Job {jobs[2][0]['id']}").click()
    placement = page.locator("#placement-table tbody tr")
    expect(placement.nth(0)).to_contain_text("onprem-small")
    expect(placement.nth(0).locator(".verdict")).to_have_text("full")
    expect(placement.nth(0)).to_contain_text("onprem-local has cpu 0, memory 2.0 GB")
    expect(placement.nth(1).locator(".verdict")).to_have_text("chosen")
    shot(page, artifacts, "job-00-burst-placement")
    page.go_back()
    expect(cpu).to_have_attribute("aria-valuenow", "100", timeout=LIVE_MS)

    # They end: the bars empty again and the list says so, without reloading the page.
    _finish(cw, *jobs)
    expect(cpu).to_have_attribute("aria-valuenow", "0", timeout=LIVE_MS)
    expect(_bar(page, "cloud-local", "cpu")).to_have_attribute("aria-valuenow", "0")
    expect(page.locator("#no-active-jobs")).to_be_visible()
    expect(page.locator("#active-jobs")).to_be_hidden()
    expect(queue.locator('[data-field="running"]')).to_have_text("0")
    shot(page, artifacts, "compute-02-idle")

    # The same page on a phone: no sideways scrolling.
    page.set_viewport_size({"width": 375, "height": 800})
    assert overflow_x(page) == 0
    shot(page, artifacts, "compute-03-phone")


def test_a_running_jobs_page_shows_its_timeline_placement_and_live_log_and_cancels(
    cpage: Any, cw: ComputeWorld, artifacts: Path
) -> None:
    page = cpage
    stop = cw.stop_file("never")  # never touched: this job ends by its cancel
    go = cw.stop_file("go")
    job = cw.submit(
        "wendy",
        waiting_job(stop, lines=120, go=go),
        inputs=[{"name": "scans", "dataset": "scans", "ref": "v1"}],
    )
    jid = job["id"]
    log_in(page, "wendy", PASSWORD)
    page.goto(f"/jobs/{jid}")
    expect(page.get_by_role("heading", name=re.compile(rf"^Job {jid}\b"), level=1)).to_be_visible()
    head = page.locator("h1 [data-field=state]")
    expect(head).to_have_text("running", timeout=LIVE_MS)

    # Timeline: queued, placed (where and why), data ready with its fill time, started.
    timeline = page.locator("#timeline")
    expect(timeline.locator(".event-started")).to_have_count(1, timeout=LIVE_MS)
    expect(timeline.locator(".event-queued")).to_contain_text("on queue burst")
    expect(timeline.locator(".event-placed")).to_contain_text(
        "on onprem-small (onprem-local at onprem)"
    )
    expect(timeline.locator(".event-data-ready")).to_contain_text(
        re.compile(r"scans@[0-9a-f]{12} \(cached\) in \d+\.\d\d s")
    )
    kinds = timeline.locator(".event-kind").all_text_contents()
    assert kinds.index("queued") < kinds.index("placed") < kinds.index("data ready")
    assert kinds.index("data ready") < kinds.index("started")

    # The placement explanation: a verdict for each template of the queue.
    placement = page.locator("#placement-table tbody tr")
    expect(placement).to_have_count(2)
    expect(placement.nth(0)).to_contain_text("onprem-small")
    expect(placement.nth(0)).to_contain_text("chosen")
    expect(placement.nth(0)).to_have_class("chosen")
    expect(placement.nth(1)).to_contain_text("cloud-small")
    expect(placement.nth(1)).to_contain_text("lower in order")
    expect(placement.nth(1)).to_contain_text("after onprem-small in the queue")

    # Inputs link to the commit's page; the one attempt is listed.
    commit = page.get_by_role("link", name=re.compile(r"^[0-9a-f]{12}$"))
    expect(commit).to_have_attribute("href", re.compile(r"^/datasets/scans/tree/[0-9a-f]{64}$"))
    expect(page.locator("#attempts-table tbody tr")).to_have_count(1)
    expect(page.locator("#attempts-table tbody tr")).to_contain_text("onprem-local")

    # The log streams while it runs, and the page follows it.
    log = page.locator("#job-log")
    expect(log).to_contain_text("line 120 of the log\nwaiting for go", timeout=LIVE_MS)
    expect(page.get_by_label("Follow")).to_be_checked()
    expect(log).not_to_contain_text("resumed")
    go.touch()
    expect(log).to_contain_text("resumed 5\nwaiting for", timeout=LIVE_MS)
    at_end = log.evaluate("pre => pre.scrollHeight - pre.scrollTop - pre.clientHeight")
    assert at_end < 5, "following the log keeps its end in view"
    shot(page, artifacts, "job-01-running")

    # Search shows only the matching lines, numbered, with the matches marked.
    page.get_by_label("Search the log").fill("line 11")
    expect(log.locator(".log-line")).to_have_count(11)  # 11 and 110..119
    expect(log.locator("mark").first).to_have_text("line 11")
    expect(page.locator("#log-status")).to_contain_text("11 of 127 lines match")
    shot(page, artifacts, "job-02-log-search")
    page.get_by_label("Search the log").fill("")
    expect(log).to_contain_text("line 1 of the log")

    # Cancel: the runner stops the process; the page shows it without a reload.
    page.get_by_role("button", name=f"Cancel job {jid}").click()
    expect(head).to_have_text("cancelled", timeout=LIVE_MS)
    expect(page.get_by_role("button", name=f"Cancel job {jid}")).to_be_hidden()
    expect(timeline.locator(".event-cancel-requested")).to_have_count(1)
    expect(timeline.locator(".event-cancelled")).to_contain_text("cancelled by request")
    expect(page.locator('[data-field="reason-text"]')).to_have_text("cancelled by request")
    expect(page.locator("#attempts-table tbody tr")).to_contain_text("cancelled")
    expect(page.locator("#log-status")).to_contain_text("the job is cancelled", timeout=LIVE_MS)
    assert cw.job(jid)["state"] == "cancelled"
    shot(page, artifacts, "job-03-cancelled")
    # On a phone the tables become cards and nothing scrolls sideways.
    page.set_viewport_size({"width": 375, "height": 800})
    assert overflow_x(page) == 0
    shot(page, artifacts, "job-03-cancelled-phone")


def test_a_failed_job_shows_its_exit_code_and_the_jobs_list_filters(
    cpage: Any, cw: ComputeWorld, artifacts: Path
) -> None:
    failed = cw.submit("wendy", ["sh", "-c", "echo about to fail; exit 3"])
    wait_for(lambda: cw.job(failed["id"])["state"] == "failed", timeout=60)
    ok = cw.submit("wendy", ["sh", "-c", 'echo "the result" > "$LAKECACHE_OUTPUTS/result.txt"'])
    wait_for(lambda: cw.job(ok["id"])["state"] == "succeeded", timeout=60)
    page = cpage
    log_in(page, "wendy", PASSWORD)
    page.goto(f"/jobs/{failed['id']}")
    expect(page.locator("h1 [data-field=state]")).to_have_text("failed")
    expect(page.locator('[data-field="exit_code"]')).to_have_text("3")
    expect(page.locator('[data-field="reason-text"]')).to_have_text("exit code 3")
    expect(page.locator("#timeline .event-failed")).to_contain_text("exit code 3")
    expect(page.locator("#job-log")).to_have_text("about to fail\n")
    expect(page.get_by_role("button", name=re.compile("^Cancel job"))).to_be_hidden()
    expect(page.get_by_label("Follow")).not_to_be_checked()
    expect(page.locator("#outputs-summary")).to_have_text("The job wrote no outputs.")
    shot(page, artifacts, "job-04-failed")

    page.get_by_role("link", name="Jobs", exact=True).first.click()
    expect(page.get_by_role("heading", name="Jobs", level=1)).to_be_visible()
    page.get_by_label("State").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"/jobs\?state=failed"))
    rows = page.locator("#jobs-table tbody tr")
    ids = [int(x) for x in rows.evaluate_all("rs => rs.map(r => r.dataset.job)")]
    assert failed["id"] in ids and ok["id"] not in ids
    states = rows.locator('[data-field="state"]').all_text_contents()
    assert states and set(states) == {"failed"}
    page.goto("/jobs?state=succeeded&queue=burst")
    ids = [
        int(x)
        for x in page.locator("#jobs-table tbody tr").evaluate_all(
            "rs => rs.map(r => r.dataset.job)"
        )
    ]
    assert ok["id"] in ids and failed["id"] not in ids
    assert ids == sorted(ids, reverse=True)  # newest first
    shot(page, artifacts, "jobs-01-list")
    page.get_by_role("link", name=f"Job {ok['id']}").click()
    expect(page.locator("h1 [data-field=state]")).to_have_text("succeeded")
    # Its outputs, collected into the lake, each with its download.
    expect(page.locator("#outputs-summary")).to_have_text("1 file, 11 B")
    output = page.get_by_role("link", name="result.txt")
    expect(output).to_have_attribute("href", f"/api/v1/jobs/{ok['id']}/outputs/result.txt")
    got = page.evaluate("href => fetch(href).then(r => r.text())", output.get_attribute("href"))
    assert got == "the result\n"
    shot(page, artifacts, "job-05-outputs")


def test_another_users_job_is_neither_shown_nor_cancellable(
    cpage: Any, cw: ComputeWorld, console: list[str]
) -> None:
    stop = cw.stop_file("hidden-job")
    job = cw.submit("wendy", waiting_job(stop))
    jid = job["id"]
    wait_for(lambda: cw.job(jid)["state"] == "running", timeout=60)
    try:
        page = cpage
        log_in(page, "nora", PASSWORD)
        response = page.goto(f"/jobs/{jid}")
        assert response is not None and response.status == 404
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        expect(page.locator("#job-live")).to_have_count(0)
        page.goto("/jobs")
        expect(page.locator(f'tr[data-job="{jid}"]')).to_have_count(0)
        expect(page.locator("#jobs-count")).to_contain_text("0 jobs")
        page.goto("/compute")
        expect(page.locator(f'tr[data-job="{jid}"]')).to_have_count(0)
        # ...though the capacity it holds is shown, as the API shows it to everyone.
        expect(_bar(page, "onprem-local", "cpu")).to_have_attribute("aria-valuenow", "50")
        # The live figures and the API's cancel, from nora's own session and CSRF token,
        # get the same 404 as a job that does not exist.
        got = page.evaluate(
            """async (id) => {
                const csrf = document.querySelector('meta[name="csrf-token"]').content;
                const live = await fetch(`/jobs/${id}/live`);
                const cancel = await fetch(`/api/v1/jobs/${id}/cancel`, {
                    method: "POST", headers: {"X-CSRF-Token": csrf}});
                const log = await fetch(`/api/v1/jobs/${id}/log`);
                return [live.status, cancel.status, log.status];
            }""",
            jid,
        )
        assert got == [404, 404, 404]
        assert cw.job(jid)["state"] == "running"
        # The browser logs those refusals (and the page's); nothing else went wrong.
        assert console and all("status of 404" in line for line in console), console
        console.clear()

        # Without the CSRF token even wendy's own session cannot cancel it.
        with httpx.Client(base_url=cw.url, timeout=30) as c:
            c.post("/api/v1/auth/login", json={"name": "wendy", "password": PASSWORD})
            assert c.get(f"/jobs/{jid}").status_code == 200
            assert c.post(f"/api/v1/jobs/{jid}/cancel").status_code == 403
            assert c.get(f"/jobs/{jid}/live").json()["can_cancel"] is True
        # The job's own token opens no page (it reads the job's inputs, nothing else).
        secret = JobTokens(cw.plane.hub.catalog).mint(jid, 1, now=cw.plane.clock.now())
        r = httpx.get(
            f"{cw.url}/jobs/{jid}/live", headers={"Authorization": f"Bearer {secret}"}, timeout=30
        )
        assert r.status_code == 403
        assert cw.job(jid)["state"] == "running"

        # An org admin sees it, and may cancel it.
        with httpx.Client(base_url=cw.url, timeout=30) as c:
            c.post("/api/v1/auth/login", json={"name": "admin", "password": ADMIN_PASSWORD})
            text = c.get(f"/jobs/{jid}").text
            assert f'data-job-id="{jid}"' in text and "Cancel job" in text
            assert c.get(f"/jobs/{jid}/live").json()["can_cancel"] is True
    finally:
        _finish(cw, (job, stop))


def test_the_pages_have_a_strict_csp_no_inline_code_and_need_a_session(cw: ComputeWorld) -> None:
    done = cw.submit("wendy", ["true"])
    wait_for(lambda: cw.job(done["id"])["state"] == "succeeded", timeout=60)
    paths = ["/compute", "/jobs", "/jobs?state=active", f"/jobs/{done['id']}"]
    with httpx.Client(base_url=cw.url, timeout=30) as c:
        for path in paths:
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
        for path in ("/compute/live", f"/jobs/{done['id']}/live"):
            r = c.get(path)
            assert r.status_code == 401 and r.json()["error"]["message"] == "log in first"
        c.post("/api/v1/auth/login", json={"name": "wendy", "password": PASSWORD})
        for path in paths:
            r = c.get(path)
            assert r.status_code == 200, (path, r.text[:500])
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert r.headers["cache-control"] == "no-store"
            markup = _Markup()
            markup.feed(r.text)
            assert markup.problems == [], path
            assert len(markup.ids) == len(set(markup.ids)), f"an id used twice on {path}"
        bad = c.get("/jobs?state=sleeping")
        assert bad.status_code == 400 and "no job state 'sleeping'" in html.unescape(bad.text)
        assert c.get("/jobs/999999").status_code == 404
        live = c.get("/compute/live").json()
        assert {s["name"] for s in live["sites"]} == {"onprem", "cloud", "edge"}
        assert live["queues"][0]["name"] == "burst"


def test_a_requeued_job_lists_both_attempts_and_follows_the_new_attempts_log(
    cpage: Any, cw: ComputeWorld, artifacts: Path
) -> None:
    stop = cw.stop_file("requeued")
    job = cw.submit("wendy", waiting_job(stop, lines=3))
    jid = job["id"]
    wait_for(lambda: cw.job(jid)["state"] == "running", timeout=60)
    page = cpage
    log_in(page, "wendy", PASSWORD)
    page.goto(f"/jobs/{jid}")
    log = page.locator("#job-log")
    expect(log).to_contain_text("line 3 of the log\nwaiting for", timeout=LIVE_MS)

    # Its worker is taken for gone (as a sweeper does when heartbeats stop): the attempt
    # is given back, the runner stops it, and the job runs again as attempt 2.
    store = ComputeStore(cw.plane.hub.catalog)
    assert store.release(jid, 1, reason="its worker went silent", now=cw.plane.clock.now())
    rows = page.locator("#attempts-table tbody tr")
    expect(rows).to_have_count(2, timeout=LIVE_MS)
    expect(page.locator('[data-field="attempt"]')).to_have_text("2 of 2")
    expect(rows.nth(0)).to_contain_text("released")
    expect(page.locator("#timeline .event-requeued")).to_contain_text("its worker went silent")
    stop.touch()
    expect(page.locator("h1 [data-field=state]")).to_have_text("succeeded", timeout=LIVE_MS)
    expect(rows.nth(1)).to_contain_text("succeeded")
    expect(rows.nth(1).locator('td[data-label="Exit code"]')).to_have_text("0")
    # The log shown is the last attempt's, whole, once: the page started again from its
    # beginning when the new attempt's log replaced the old one.
    expect(log).to_contain_text("finished", timeout=LIVE_MS)
    assert (log.text_content() or "").count("line 1 of the log") == 1
    claimed = page.locator("#timeline .event-claimed .muted").all_text_contents()
    assert claimed == ["(attempt 1)", "(attempt 2)"]
    shot(page, artifacts, "job-06-two-attempts")
