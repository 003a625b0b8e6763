"""After logging in, the dashboard goes only to a path of its own site (server side).

The browser's side, ``safeNext`` in dashboard.js, is driven in Chromium in
test_browser.py with the same :data:`HOSTILE` list.
"""

from __future__ import annotations

import pytest

from lakecache.server.dashboard.pages import safe_next

#: Targets that would lead a browser off the site, or that no page of it has.
HOSTILE = [
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "/\\/evil.example",
    "\\/evil.example",
    "/\t/evil.example",  # a browser drops the tab: "//evil.example"
    "/\n/evil.example",
    "/\r\n/evil.example",
    "/\x00/evil.example",
    "/\x0b/evil.example",
    "/\x7f/evil.example",
    " //evil.example",
    "https://evil.example/",
    "http:/evil.example",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "/%2F%2Fevil.example",
    "/%2f%2fevil.example",
    "/%5Cevil.example",
    "/%09/evil.example",
    "/datasets/%2e%2e/%2e%2e/evil",
    "evil.example",
    "/" + "a" * 2048,
]
#: Paths of the site, which come back unchanged.
OWN = [
    "/",
    "/datasets/xray?cursor=abc",
    "/datasets/xray/tree/0123abcd/images/a%20b.png",
    "/datasets/xray/tree/0123abcd?path=a%2Fb",  # an encoded '/' in the query is data
    "/caches#filling",
]


@pytest.mark.parametrize("target", HOSTILE)
def test_hostile_targets_lead_home(target: str) -> None:
    """Fails on the code before for '/\\t/evil.example' and the other controls, and for
    the encoded separators."""
    assert safe_next(target) == "/"


@pytest.mark.parametrize("target", OWN)
def test_paths_of_the_site_are_kept(target: str) -> None:
    assert safe_next(target) == target


def test_nothing_leads_home() -> None:
    assert safe_next(None) == "/" and safe_next("") == "/"
