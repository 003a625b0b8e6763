"""The dashboard's words for numbers and times, its redirects, and its capacity bars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lakecache.server.dashboard.pages import capacity, safe_next
from lakecache.server.dashboard.render import ago, duration, percent, size, urlpath
from lakecache.server.models import VolumeOut


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 kB"),
        (1234, "1.23 kB"),
        (99_500, "99.5 kB"),
        (123_456, "123 kB"),
        (64_384_414, "64.4 MB"),
        (2_135_906_615, "2.14 GB"),
        (5 * 10**15, "5000 TB"),
        (None, "–"),
    ],
)
def test_size(n: int | None, text: str) -> None:
    assert size(n) == text


@pytest.mark.parametrize(
    ("s", "text"),
    [
        (0, "0 s"),
        (59.9, "59 s"),
        (60, "1 min"),
        (3600, "1 h"),
        (3660, "1 h 1 min"),
        (86400, "1 d"),
        (90000, "1 d 1 h"),
    ],
)
def test_duration(s: float, text: str) -> None:
    assert duration(s) == text


def test_ago() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert ago(now - timedelta(seconds=2), now) == "just now"
    assert ago(now - timedelta(minutes=5), now) == "5 min ago"
    assert ago("2026-01-01T10:00:00+00:00", now) == "2 h ago"
    assert ago(None, now) == "never"


def test_urlpath_encodes_each_segment() -> None:
    assert urlpath("a b/c#d/e?f") == "a%20b/c%23d/e%3Ff"
    assert urlpath("x/<img>.png") == "x/%3Cimg%3E.png"


@pytest.mark.parametrize(
    ("target", "where"),
    [
        (None, "/"),
        ("", "/"),
        ("/datasets/x?y=1", "/datasets/x?y=1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_after_login_only_paths_of_this_site(target: str | None, where: str) -> None:
    assert safe_next(target) == where


def _volume(capacity_: int, committed: int, free_fs: int | None) -> VolumeOut:
    left = max(0, capacity_ - committed)
    return VolumeOut(
        name="v",
        site="s",
        root="/x",
        capacity=capacity_,
        ttl_seconds=60,
        committed=committed,
        free_fs=free_fs,
        available=left if free_fs is None else min(left, free_fs),
        caches=1,
        linked_saved=0,
    )


def test_capacity_bar_parts_add_up_to_the_quota() -> None:
    bar = capacity(_volume(1000, 250, None))
    assert (bar.committed_pct, bar.available_pct, bar.blocked_pct) == (25.0, 75.0, 0.0)
    # the disk is fuller than the quota allows: part of the quota cannot be used
    bar = capacity(_volume(1000, 250, 500))
    assert (bar.committed_pct, bar.available_pct, bar.blocked_pct) == (25.0, 50.0, 25.0)
    assert bar.blocked == 250
    # over quota (hard links counted apart, quota lowered later): the bar is full, no more
    bar = capacity(_volume(1000, 1500, None))
    assert (bar.committed_pct, bar.available_pct, bar.blocked_pct) == (100.0, 0.0, 0.0)
    assert percent(1, 0) == 0.0


def test_rows_are_escaped_and_link_each_path_segment() -> None:
    from lakecache.server.dashboard.render import tree_rows
    from lakecache.server.models import TreeItem

    rows = tree_rows(
        [
            TreeItem(name="a b", path="x/a b", type="folder", size=5, files=2),
            TreeItem(
                name='<i>"q"&.png',
                path='x/<i>"q"&.png',
                type="file",
                size=7,
                files=1,
                content_type="image/png",
            ),
        ],
        "/datasets/d/tree/c0ffee/",
    )
    assert '<a class="folder" href="/datasets/d/tree/c0ffee/x/a%20b">a b/</a>' in rows
    assert "&lt;i&gt;&quot;q&quot;&amp;.png</a>" in rows
    assert 'href="/datasets/d/tree/c0ffee/x/%3Ci%3E%22q%22%26.png"' in rows
    assert "<i>" not in rows


def test_the_listing_cache_keeps_the_last_pages_only() -> None:
    from markupsafe import Markup

    from lakecache.server.dashboard.pages import Listing, ListingCache

    cache = ListingCache(size=2)
    page = Listing(Markup(""), 0, None, 0, 0)
    cache.put(("c1", "", None), page)
    cache.put(("c2", "", None), page)
    assert cache.get(("c1", "", None)) is page  # c1 is now the most recent
    cache.put(("c3", "", None), page)
    assert cache.get(("c2", "", None)) is None
    assert cache.get(("c1", "", None)) is page and cache.get(("c3", "", None)) is page
