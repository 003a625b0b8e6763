"""The dashboard's pages over plain HTTP: who sees what, security headers, escaping.

These need no browser; test_browser.py drives the same pages in Chromium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest

from dashboard.drive import ADMIN_PASSWORD, DATASET, PASSWORD, XSS_DESCRIPTION, XSS_NAME, Dash

PAGES = [
    "/",
    "/?q=chest",
    f"/datasets/{DATASET}",
    f"/datasets/{DATASET}/tree/latest",
    f"/datasets/{DATASET}/tree/v1/No_Finding",
    f"/datasets/{DATASET}/tree/latest/No_Finding/00000000.png",
    f"/datasets/{DATASET}/tree/latest/odd",
    f"/datasets/{DATASET}/diff?from=v1&to=v2",
    f"/datasets/{DATASET}/diff",
    "/caches",
    "/sites",
]


def _session(dash: Dash, name: str = "admin", password: str = ADMIN_PASSWORD) -> httpx.Client:
    client = httpx.Client(base_url=dash.url, timeout=30)
    r = client.post("/api/v1/auth/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    return client


@pytest.fixture(scope="module")
def admin(dash: Dash) -> Iterator[httpx.Client]:
    client = _session(dash)
    yield client
    client.close()


class _Markup(HTMLParser):
    """Collects what a strict CSP would refuse: inline scripts, handlers, style attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            if not names.get("src"):
                self.problems.append("inline <script>")
            self.scripts.append(names.get("src") or "")
        if "style" in names:
            self.problems.append(f"style attribute on <{tag}>")
        if tag == "style":
            self.problems.append("<style> element")
        for name in names:
            if name.startswith("on"):
                self.problems.append(f"{name} handler on <{tag}>")
        if names.get("id"):
            self.ids.append(str(names["id"]))


@pytest.mark.parametrize("path", PAGES)
def test_each_page_renders_with_a_strict_csp_and_no_inline_code(
    admin: httpx.Client, path: str
) -> None:
    r = admin.get(path)
    assert r.status_code == 200, r.text[:2000]
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["cache-control"] == "no-store"
    markup = _Markup()
    markup.feed(r.text)
    assert markup.problems == []
    assert [s.split("?")[0] for s in markup.scripts] == ["/static/dashboard.js"]
    assert len(markup.ids) == len(set(markup.ids)), "an id used twice"
    assert '<meta name="csrf-token" content="' in r.text
    assert 'lang="en"' in r.text and '<main id="main"' in r.text


def test_static_files_are_served(admin: httpx.Client) -> None:
    for name, kind in (
        ("dashboard.js", "javascript"),
        ("dashboard.css", "text/css"),
        ("favicon.svg", "svg"),
    ):
        r = httpx.get(f"{str(admin.base_url).rstrip('/')}/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    r = admin.get("/")
    versioned = re.findall(r"/static/dashboard\.(?:js|css)\?v=[0-9a-f]{12}", r.text)
    assert len(versioned) == 2


def test_without_a_session_every_page_sends_to_login(dash: Dash) -> None:
    with httpx.Client(base_url=dash.url, timeout=30) as anon:
        for path in PAGES:
            r = anon.get(path)
            assert r.status_code == 303, path
            location = r.headers["location"]
            assert location.startswith("/login?next=")
            assert httpx.URL(location).params["next"] == path
        # a cookie from an ended session is the same as none
        anon.cookies.set("lakecache_session", "not-a-session")
        assert anon.get("/caches").status_code == 303
        login = anon.get("/login?next=//evil.example/")
        assert login.status_code == 200
        assert 'data-next="/"' in login.text


def test_logged_in_the_login_page_moves_on(admin: httpx.Client) -> None:
    r = admin.get("/login?next=/caches")
    assert r.status_code == 303 and r.headers["location"] == "/caches"


def test_data_is_escaped_by_the_templates(admin: httpx.Client) -> None:
    listing = admin.get("/").text
    assert XSS_DESCRIPTION not in listing
    assert "Meeting notes &lt;script&gt;alert(&#34;notes&#34;)&lt;/script&gt;" in listing
    odd = admin.get(f"/datasets/{DATASET}/tree/latest/odd").text
    assert XSS_NAME not in odd
    assert "&lt;img src=x onerror=alert(1)&gt;.txt" in odd


def test_a_reader_gets_no_cache_buttons_and_a_non_member_a_plain_404(dash: Dash) -> None:
    rita = _session(dash, "rita", PASSWORD)
    try:
        page = rita.get(f"/datasets/{DATASET}").text
        assert 'data-action="cache"' not in page
        assert "Your role</dt><dd>reader" in page
        assert rita.get("/datasets/notes").status_code == 404
        missing = rita.get("/datasets/no-such-dataset")
        hidden = rita.get("/datasets/notes")
        # the same page for a dataset that does not exist and one rita may not see
        assert missing.text.replace("no-such-dataset", "notes") == hidden.text
        assert 'href="/datasets/notes"' not in rita.get("/?q=notes").text
    finally:
        rita.close()


def test_bad_refs_and_paths_are_error_pages(admin: httpx.Client) -> None:
    r = admin.get(f"/datasets/{DATASET}/tree/no-such-tag")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    assert r.headers["content-security-policy"]
    r = admin.get(f"/datasets/{DATASET}/tree/latest/not/there")
    assert r.status_code == 404 and "no folder or file" in r.text
    r = admin.get(f"/datasets/{DATASET}/tree/latest/many?cursor=garbage")
    assert r.status_code == 400 and "invalid cursor" in r.text
    # dot-segments never reach the router
    r = admin.get(f"/datasets/{DATASET}/tree/latest/%2e%2e/x")
    assert r.status_code == 400


def test_a_later_page_without_javascript(admin: httpx.Client, dash: Dash) -> None:
    first = admin.get(f"/datasets/{DATASET}/tree/latest/many").text
    href = re.search(r'id="load-more" href="([^"]+)"', first)
    assert href is not None
    second = admin.get(
        f"/datasets/{DATASET}/tree/latest/many" + href.group(1).replace("&amp;", "&")
    )
    assert second.status_code == 200
    assert "item0200.txt" in second.text and "item0199.txt" not in second.text


def test_dashboard_routes_stay_out_of_the_api_spec(admin: httpx.Client) -> None:
    paths = admin.get("/api/v1/openapi.json").json()["paths"]
    assert all(p.startswith(("/api/", "/healthz", "/metrics")) for p in paths)


def test_the_page_carries_the_csrf_token_that_unsafe_calls_need(dash: Dash) -> None:
    """What dashboard.js does: read the token from the page, send it with each change."""
    from server.live import wait_for

    s = _session(dash)
    try:
        page = s.get("/caches").text
        meta = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
        assert meta is not None
        assert meta.group(1) == s.get("/api/v1/auth/session").json()["csrf_token"]
        body = {"ref": "v2", "site": "onprem"}
        refused = s.post(f"/api/v1/datasets/{DATASET}/caches", json=body)
        assert refused.status_code == 403
        headers = {"X-CSRF-Token": meta.group(1)}
        r = s.post(f"/api/v1/datasets/{DATASET}/caches", json=body, headers=headers)
        assert r.status_code == 202
        cache = r.json()
        wait_for(lambda: s.get(f"/api/v1/caches/{cache['id']}").json()["state"] == "ready")
        for path in ("/caches", f"/datasets/{DATASET}", "/"):
            html = s.get(path).text
            assert "ready" in html, path
        rows = s.get(f"/datasets/{DATASET}").text
        assert f'<tr data-cache="{cache["id"]}" data-state="ready"' in rows
        assert f'data-action="clear" data-cache-id="{cache["id"]}"' in rows
    finally:
        s.close()


def test_a_cached_listing_is_still_only_for_readers(admin: httpx.Client, dash: Dash) -> None:
    # the org admin's visit puts notes' top folder in the listing cache...
    assert "readme.txt" in admin.get("/datasets/notes/tree/latest").text
    rita = _session(dash, "rita", PASSWORD)
    try:
        # ...and a non-member still gets the same 404 as for a dataset that does not exist
        notes_id = dash.plane.hub.catalog.resolve("notes", "latest")
        for path in ("/datasets/notes/tree/latest", f"/datasets/notes/tree/{notes_id}"):
            r = rita.get(path)
            assert r.status_code == 404 and "readme.txt" not in r.text
    finally:
        rita.close()
