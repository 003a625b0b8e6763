"""A cache that waits or failed says why on its card, and keeps its Evict button.

Runs after the other dashboard tests (it adds a site to the shared server) and
removes what it added.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from dashboard.drive import ADMIN_PASSWORD, DATASET, Dash, log_in, shot


def test_pending_at_a_site_without_agent_says_how_to_start_one(
    page: Any, dash: Dash, artifacts: Path, tmp_path: Path
) -> None:
    topo = dash.plane.topology
    now = dash.plane.clock.now()
    topo.add_site("lab", "a lab with no agent running", now)
    # Mounted on the lab's machines only: nothing here fills it.
    topo.add_volume("lab-nfs", "lab", str(tmp_path / "not-mounted"), 10**9, 3600, now)
    try:
        log_in(page)
        page.goto(f"/datasets/{DATASET}")
        v1 = dash.commits["v1"]
        page.locator(f"#commit-{v1[:12]}").get_by_role(
            "button", name=f"Cache {DATASET}@{v1[:12]} on lab"
        ).click()
        row = page.locator("#caches-table tbody tr").filter(has_text="lab / lab-nfs")
        expect(row.locator("[data-field=state]")).to_have_text("pending")
        note = row.locator("[data-field=agent-note]")
        expect(note).to_be_visible()
        expect(note).to_have_text(
            "no agent at lab: run `lakecache agent --site lab` on a machine that mounts it"
        )
        page.get_by_role("link", name="Caches", exact=True).click()
        lab_row = (
            page.locator("section.volume").filter(has_text="Volume lab-nfs").locator("tbody tr")
        )
        expect(lab_row.locator("[data-field=agent-note]")).to_contain_text("no agent at lab")
        shot(page, artifacts, "14-pending-without-agent")
        # Clearing a cache nobody started drops it at once.
        lab_row.get_by_role("button", name=re.compile("^Evict cache")).click()
        expect(lab_row.locator("[data-field=state]")).to_have_text("evicted", timeout=15_000)
    finally:
        topo.remove_volume("lab-nfs")


def test_a_failed_cache_shows_its_reason_apart_and_can_be_cleared(
    page: Any, dash: Dash, artifacts: Path
) -> None:
    with httpx.Client(base_url=dash.url, timeout=30) as c:
        c.post("/api/v1/auth/login", json={"name": "admin", "password": ADMIN_PASSWORD})
        csrf = c.get("/api/v1/auth/session").json()["csrf_token"]
        r = c.post(
            f"/api/v1/datasets/{DATASET}/caches",
            json={"ref": dash.commits["v2"], "site": "onprem"},
            headers={"X-CSRF-Token": csrf},
        )
        r.raise_for_status()
        cache_id = r.json()["id"]
    topo = dash.plane.topology
    # Wait for the onprem agent to finish with it, then record a failure as a filler does.
    deadline = dash.plane.clock.now().timestamp() + 30
    while topo.get_cache(cache_id).state in ("pending", "filling"):
        assert dash.plane.clock.now().timestamp() < deadline, "the onprem agent never filled it"
        page.wait_for_timeout(100)
    topo.update_cache(cache_id, state="failed", error="No space left on device (ENOSPC)")

    log_in(page)
    page.goto("/caches")
    row = page.locator(f"tr[data-cache='{cache_id}']")
    expect(row.locator("[data-field=state]")).to_have_text("failed")  # the state alone
    expect(row.locator("[data-field=error]")).to_have_text("No space left on device (ENOSPC)")
    clear = row.get_by_role("button", name=re.compile("^Evict cache"))
    expect(clear).to_be_visible()
    shot(page, artifacts, "15-failed-cache")
    clear.click()
    expect(row.locator("[data-field=state]")).to_have_text("evicted", timeout=30_000)


def test_what_a_fill_evicted_to_make_room_shows_on_its_card(page: Any, dash: Dash) -> None:
    topo = dash.plane.topology
    rec = dash.plane.caches().request(DATASET, dash.commits["latest"], site="onprem")
    said = "made room on onprem-nvme: evicted 1 cache(s), 20 kB: chest-xray@0123456789ab (20 kB)"
    topo.set_report(rec.id, said)
    log_in(page)
    page.goto("/caches")
    expect(page.locator(f"tr[data-cache='{rec.id}'] [data-field=report]")).to_have_text(said)
