"""The dashboard in real headless Chromium: what a person does, by mouse and by keyboard.

Each test starts from a fresh browser context (no cookie) against the live
server of ``conftest.dash``, and fails on any script error, CSP violation or
failed request the page logs. Screenshots land in test-artifacts/dashboard/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboard.drive import (
    ADMIN_PASSWORD,
    DATASET,
    MANY,
    PASSWORD,
    XSS_DESCRIPTION,
    XSS_LAST,
    XSS_NAME,
    Dash,
    image_loaded,
    log_in,
    overflow_x,
    shot,
    tab_to,
)

pytestmark = pytest.mark.usefixtures("browser")


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def _api(dash: Dash, path: str) -> Any:
    with httpx.Client(base_url=dash.url, timeout=30) as c:
        c.post("/api/v1/auth/login", json={"name": "admin", "password": ADMIN_PASSWORD})
        r = c.get(path)
        r.raise_for_status()
        return r.json()


def test_log_in_find_browse_open_an_image_and_compare(
    page: Any, dash: Dash, artifacts: Path
) -> None:
    page.goto("/")
    assert "/login" in page.url  # no session: the login page, which comes back here after
    shot(page, artifacts, "01-login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Datasets", exact=True)).to_be_visible()
    shot(page, artifacts, "02-datasets")

    # find it
    page.get_by_label("Search datasets").fill("chest")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#datasets-count")).to_have_text(re.compile(r"^1 dataset matching"))
    expect(page.get_by_role("link", name="notes", exact=True)).to_have_count(0)
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=DATASET))
    expect(row).to_contain_text("Synthetic chest X-rays")
    page.get_by_role("link", name=DATASET, exact=True).click()

    # the version hub: three commits, drawn with their lineage, tags and stats
    expect(page.get_by_role("heading", name=DATASET, level=1)).to_be_visible()
    commits = page.locator("ol.commits > li")
    expect(commits).to_have_count(3)
    expect(page.locator(".graph-svg circle.node")).to_have_count(3)
    # the newest two commits each draw a line down to their parent
    assert page.locator("ol.commits > li").nth(0).locator("line.edge").count() >= 1
    expect(commits.nth(0)).to_contain_text("add a JPEG scan")
    expect(commits.nth(1).locator(".tag")).to_have_text(["v2"])
    expect(commits.nth(2).locator(".tag")).to_have_text(["v1"])
    expect(commits.nth(2)).to_contain_text("first commit")
    expect(commits.nth(1)).to_contain_text(f"parent {dash.commits['v1'][:12]}")
    shot(page, artifacts, "03-dataset")

    # browse into a folder, and open a PNG
    page.get_by_role("link", name="Browse the latest files").click()
    expect(page.locator("#entries")).to_be_visible()
    shot(page, artifacts, "04-tree-root")
    page.get_by_role("link", name="No_Finding/").click()
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    expect(crumbs.locator("[aria-current=page]")).to_have_text("No_Finding")
    first_png = page.locator("#entries a.file").first
    name = first_png.inner_text()
    assert name.endswith(".png")
    first_png.click()
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    assert image_loaded(page)
    expect(page.get_by_role("img", name=f"Preview of No_Finding/{name}")).to_be_visible()
    shot(page, artifacts, "05-image")
    crumbs.get_by_role("link", name="No_Finding").click()  # breadcrumbs lead back up
    expect(page.locator("#entries a.file").first).to_have_text(name)

    # a JPEG previews too
    page.goto(f"/datasets/{DATASET}/tree/{dash.commits['latest']}/scans/photo.jpg")
    assert image_loaded(page)

    # compare v1 with v2
    page.goto(f"/datasets/{DATASET}")
    page.get_by_label("From").select_option(dash.commits["v1"])
    page.get_by_label("To").select_option(dash.commits["v2"])
    page.get_by_role("button", name="Compare").click()
    want = _api(dash, f"/api/v1/datasets/{DATASET}/diff?from=v1&to=v2")
    assert want["added"] > 0 and want["modified"] > 0
    counts = page.locator("#diff-counts")
    expect(counts.locator("[data-field=added]")).to_have_text(str(want["added"]))
    expect(counts.locator("[data-field=removed]")).to_have_text(str(want["removed"]))
    expect(counts.locator("[data-field=modified]")).to_have_text(str(want["modified"]))
    expect(page.locator("#changes tbody tr")).to_have_count(want["total"])
    shot(page, artifacts, "06-diff")


def test_a_huge_folder_loads_page_by_page(page: Any, dash: Dash, artifacts: Path) -> None:
    log_in(page)
    page.goto(f"/datasets/{DATASET}/tree/{dash.commits['latest']}/many")
    rows = page.locator("#entries tbody tr:not(.up)")
    expect(rows).to_have_count(200)
    expect(page.locator("#folder-count")).to_contain_text(f"{MANY + 1} files")
    more = page.get_by_role("link", name="Load more")
    more.click()
    expect(rows).to_have_count(400)
    expect(page.locator("#shown-count")).to_have_text("400 shown")
    more.click()
    expect(rows).to_have_count(MANY + 1)
    expect(more).to_have_count(0)  # the last page: no more to load
    # the file names that are markup arrived through the script, and stayed text
    last = rows.last.locator("a")
    expect(last).to_have_text(XSS_LAST)
    assert last.locator("b").count() == 0
    shot(page, artifacts, "07-load-more", full=False)


def test_cache_a_commit_watch_it_fill_then_clear_it(page: Any, dash: Dash, artifacts: Path) -> None:
    log_in(page)
    page.goto(f"/datasets/{DATASET}")
    v1 = dash.commits["v1"]
    item = page.locator(f"#commit-{v1[:12]}")
    item.get_by_role("button", name=f"Cache {DATASET}@{v1[:12]} on onprem").click()
    badge = item.locator(".commit-caches .place-state")
    expect(badge).to_contain_text("onprem:")
    expect(badge.locator("[data-field=state]")).to_have_text("ready", timeout=30_000)
    row = page.locator("#caches-table tbody tr").filter(has_text="onprem / onprem-nvme")
    expect(row.locator("[data-field=state]")).to_have_text("ready")
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    total = _api(dash, f"/api/v1/datasets/{DATASET}/commits/v1")["bytes"]
    expect(row.locator("[data-field=progress-text]")).to_contain_text(_size(total))

    # the latest commit on the other site, so both sites have one
    latest = dash.commits["latest"]
    page.locator(f"#commit-{latest[:12]}").get_by_role(
        "button", name=f"Cache {DATASET}@{latest[:12]} on cloud"
    ).click()
    expect(page.locator(f"#commit-{latest[:12]} .place-state [data-field=state]")).to_have_text(
        "ready", timeout=30_000
    )
    shot(page, artifacts, "08-dataset-cached")

    # the caches page: a capacity bar per volume, and Clear
    page.get_by_role("link", name="Caches", exact=True).click()
    onprem = page.locator("section.volume").filter(has_text="Volume onprem-nvme")
    bar = onprem.get_by_role("progressbar", name="Capacity of volume onprem-nvme")
    assert float(bar.get_attribute("aria-valuenow") or 0) > 0
    expect(bar).to_have_attribute("aria-valuetext", re.compile(r"committed to caches"))
    expect(page.get_by_role("progressbar", name="Capacity of volume cloud-nvme")).to_be_visible()
    shot(page, artifacts, "09-caches")
    row = onprem.locator("tbody tr").filter(has_text=v1[:12])
    expect(row.locator("[data-field=state]")).to_have_text("ready")
    row.get_by_role("button", name=re.compile("^Evict cache")).click()
    expect(row.locator("[data-field=state]")).to_have_text("evicted", timeout=30_000)
    expect(row.get_by_role("button", name=re.compile("^Evict"))).to_have_count(0)
    # the bar follows: nothing committed on onprem any more
    expect(bar).to_have_attribute("aria-valuenow", "0")
    shot(page, artifacts, "10-caches-cleared")
    assert _api(dash, f"/api/v1/datasets/{DATASET}/caches?state=evicted")["total"] >= 1


def _size(n: int) -> str:
    from lakecache.server.dashboard.render import size

    return size(n)


def test_a_reader_cannot_cache_or_clear_and_sees_only_their_datasets(page: Any, dash: Dash) -> None:
    log_in(page, "rita", PASSWORD)
    expect(page.get_by_role("link", name=DATASET, exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="notes", exact=True)).to_have_count(0)
    page.goto(f"/datasets/{DATASET}")
    expect(page.locator("ol.commits > li")).to_have_count(3)
    expect(page.get_by_role("button", name=re.compile("^Cache "))).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("^Evict"))).to_have_count(0)


def test_keyboard_only_log_in_find_browse_open(page: Any, dash: Dash, artifacts: Path) -> None:
    page.goto("/")
    # the name field has the focus already (autofocus lands at the next rendering step,
    # which a loaded machine may reach after the load event); Tab to the password, Enter
    expect(page.locator("#login-name")).to_be_focused()
    page.keyboard.type("admin")
    page.keyboard.press("Tab")
    page.keyboard.type(ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/$"))

    skip = tab_to(page, "el => true")
    assert skip["text"] == "Skip to content"
    tab_to(page, "el => el.id === 'q'")
    page.keyboard.type("xray")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"q=xray"))
    link = tab_to(page, f"el => el.textContent.trim() === '{DATASET}'")
    assert link["outline"] != "none" and link["outlineWidth"] != "0px"  # focus is visible
    shot(page, artifacts, "11-keyboard-focus", full=False)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(f"/datasets/{DATASET}$"))

    tab_to(page, "el => el.textContent.trim() === 'Browse the latest files'")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile("/tree/"))
    tab_to(page, "el => el.textContent.trim() === 'Effusion/'")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile("/Effusion$"))
    tab_to(page, "el => el.classList.contains('file')")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"\.png$"))
    assert image_loaded(page)

    # and a cache request from the keyboard: Tab to the button, Enter
    page.goto(f"/datasets/{DATASET}")
    v2 = dash.commits["v2"][:12]
    tab_to(page, f"el => (el.getAttribute('aria-label') || '') === 'Cache {DATASET}@{v2} on cloud'")
    page.keyboard.press("Enter")
    state = page.locator(f"#commit-{v2} .place-state [data-field=state]")
    expect(state).to_have_text("ready", timeout=30_000)


PHONE_PAGES = [
    ("/", "phone-datasets"),
    (f"/datasets/{DATASET}", "phone-dataset"),
    (f"/datasets/{DATASET}/tree/latest", None),
    (f"/datasets/{DATASET}/tree/latest/many", None),
    (f"/datasets/{DATASET}/tree/latest/No_Finding/00000000.png", "phone-image"),
    (f"/datasets/{DATASET}/diff?from=v1&to=v2", None),
    ("/caches", "phone-caches"),
    ("/sites", "phone-sites"),
]


def test_pages_fit_a_phone_and_a_1280_screen(
    browser: Any, dash: Dash, artifacts: Path, console: list[str]
) -> None:
    for width, height in ((375, 812), (1280, 900)):
        context = browser.new_context(
            viewport={"width": width, "height": height}, base_url=dash.url
        )
        try:
            pg = context.new_page()
            pg.on("pageerror", lambda exc: console.append(str(exc)))
            log_in(pg)
            for path, name in PHONE_PAGES:
                pg.goto(path)
                pg.wait_for_load_state("load")
                assert overflow_x(pg) <= 0, f"{path} scrolls sideways at {width} px"
                if name and width == 375:
                    shot(pg, artifacts, name)
            if width == 1280:
                pg.goto("/sites")
                shot(pg, artifacts, "12-sites")
        finally:
            context.close()
    assert not console


def test_markup_in_data_shows_as_text(page: Any, dash: Dash) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    log_in(page)
    expect(page.get_by_text(XSS_DESCRIPTION)).to_be_visible()
    assert page.locator("table.datasets script").count() == 0
    page.goto(f"/datasets/{DATASET}/tree/latest/odd")
    expect(page.locator("#entries a.file")).to_have_text(XSS_NAME)
    assert page.locator("#entries img").count() == 0
    page.locator("#entries a.file").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(XSS_NAME)
    assert not dialogs


def test_a_page_without_a_session_asks_to_log_in_and_comes_back(
    page: Any, dash: Dash, console: list[str]
) -> None:
    page.goto(f"/datasets/{DATASET}/diff?from=v1&to=v2")
    assert "/login?next=" in page.url
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("wrong user name or password")
    assert all("status of 401" in line for line in console)  # the refused login, logged
    console.clear()
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/diff\?from=v1&to=v2$"))
    expect(page.locator("#diff-counts")).to_be_visible()
    # log out: the session ends, and pages ask again
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile("/login$"))
    page.goto("/caches")
    assert "/login?next=%2Fcaches" in page.url


def test_a_hidden_dataset_is_a_plain_not_found(page: Any, console: list[str]) -> None:
    log_in(page, "rita", PASSWORD)
    response = page.goto("/datasets/notes")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("no dataset named 'notes'")
    console.clear()  # the browser logs the 404 itself


def test_the_api_reference_renders_from_this_server_alone(
    page: Any, dash: Dash, artifacts: Path
) -> None:
    """Swagger UI under the page's CSP, with every request to this server (no CDN)."""
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto("/api/v1/docs")
    # Swagger UI parses a 1 MB script and the whole spec first: seconds on a busy 2-core box.
    expect(page.locator(".opblock-tag-section").first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("/api/v1/datasets/{dataset}/commits/{ref}/tree").first).to_be_attached()
    shot(page, artifacts, "api-docs")
    assert requests and all(u.startswith(dash.url) for u in requests), requests


def test_after_log_in_the_script_goes_only_to_paths_of_this_site(
    page: Any, dash: Dash, console: list[str]
) -> None:
    """``safeNext`` in dashboard.js, in Chromium: a hostile target planted in the login form
    (as if the server's own check had been passed by) leads home, a path of the site is
    followed. Fails on the script before for '/\\t/evil.example' (the browser drops the tab
    and goes to //evil.example) and the other control characters and encodings."""
    from dashboard.test_safe_next import HOSTILE

    # Whatever is off this site is answered here: a bad redirect shows as a page, not an error.
    page.context.route(
        lambda url: not url.startswith(dash.url),
        lambda route: route.fulfill(status=200, content_type="text/html", body="<h1>evil</h1>"),
    )

    def log_in_towards(target: str) -> str:
        page.context.clear_cookies()
        page.goto("/login")
        page.evaluate("t => { document.getElementById('login-form').dataset.next = t; }", target)
        page.get_by_label("User name").fill("rita")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(lambda url: "/login" not in url)
        return str(page.url)

    landed = {target: log_in_towards(target) for target in HOSTILE}
    assert landed == dict.fromkeys(HOSTILE, f"{dash.url}/")
    assert log_in_towards("/caches") == f"{dash.url}/caches"
