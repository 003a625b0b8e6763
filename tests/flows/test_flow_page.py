"""The flow pages in real headless Chromium: the DAG drawn, states updating live, links to
each task's job, the runs list, and the same 404 for someone else's run.

Screenshots go to test-artifacts/flows/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard.drive import CHROMIUM, CHROMIUM_ARGS, log_in
from server.live import PASSWORD, World

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "flows"
LIVE_MS = 60_000


def _flow(gate: Path) -> str:
    return f"""\
name: page
tasks:
  prep:
    command: >-
      while [ ! -e {gate} ]; do sleep 0.1; done;
      mkdir "$LAKECACHE_OUTPUTS/d"; echo 1 > "$LAKECACHE_OUTPUTS/d/x"
    queue: q
    outputs: [d]
  train:
    params: {{lr: [0.1, 0.2]}}
    command: "test -e $LAKECACHE_INPUT_D/d/x"
    queue: q
    inputs: {{d: {{task: prep}}}}
  pick:
    command: "true"
    queue: q
    after: [train]
"""


@pytest.fixture
def page(served: World) -> Iterator[tuple[Any, list[str]]]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install the Debian package")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=served.url)
        context.set_default_timeout(15_000)
        pg = context.new_page()
        pg.on("pageerror", lambda exc: errors.append(f"{pg.url}: {exc}"))
        pg.on(
            "console",
            lambda msg: errors.append(f"{pg.url}: {msg.text}") if msg.type == "error" else None,
        )
        yield pg, errors
        context.close()
        browser.close()


def test_the_run_page_draws_the_dag_and_follows_it_live(
    served: World, page: tuple[Any, list[str]], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    pg, errors = page
    gate = tmp_path / "gate"
    r = served.call("wendy", "POST", "/api/v1/flows/runs", json={"source": _flow(gate)})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]

    log_in(pg, "wendy", PASSWORD)
    pg.goto(f"/flows/{run_id}")
    nodes = pg.locator(".flow-node")
    expect(nodes).to_have_count(4)
    levels = pg.locator(".flow-level")
    expect(levels).to_have_count(3)
    expect(levels.nth(1).locator(".flow-node")).to_have_count(2)
    prep = pg.locator('.flow-node[data-task="prep"]')
    expect(prep.locator(".state")).to_have_text("running", timeout=LIVE_MS)
    # The edges: prep -> each training, each training -> pick.
    expect(pg.locator("svg.flow-edges path")).to_have_count(4)
    job_href = prep.locator('[data-field="job"]').get_attribute("href")
    assert job_href is not None and job_href.startswith("/jobs/")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "flow-running.png"), full_page=True)

    gate.write_text("go")  # the page follows the run to its end without a reload
    expect(pg.locator('[data-field="run-state"] .state')).to_have_text("succeeded", timeout=LIVE_MS)
    expect(pg.locator('.flow-node[data-task="pick"] .state')).to_have_text("succeeded")
    train = pg.locator('.flow-node[data-task="train[lr=0.2]"] [data-field="job"]')
    expect(train).to_have_attribute("href", _job_of(served, run_id, "train[lr=0.2]"))
    expect(pg.locator('[data-action="cancel-flow"]')).to_be_hidden()
    pg.screenshot(path=str(ARTIFACTS / "flow-succeeded.png"), full_page=True)

    pg.goto("/flows")
    row = pg.locator(f'#flows-table tr[data-run="{run_id}"]')
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("4 succeeded")
    row.locator("a").click()
    expect(pg).to_have_url(f"{served.url}/flows/{run_id}")
    assert not errors, errors

    # Another person: the same 404 as for a run that does not exist.
    pg.context.clear_cookies()
    log_in(pg, "nora", PASSWORD)
    response = pg.goto(f"/flows/{run_id}")
    assert response is not None and response.status == 404
    errors.clear()  # the 404 page's failed request is logged as a console error


def _job_of(served: World, run_id: int, name: str) -> str:
    shown = served.call("wendy", "GET", f"/api/v1/flows/runs/{run_id}").json()
    job = next(t["job_id"] for t in shown["tasks"] if t["name"] == name)
    return f"/jobs/{job}"
