"""HTML for the dashboard: one Jinja2 environment (autoescaped), its filters, and the headers.

Every page goes out with a Content-Security-Policy that allows scripts, styles,
images and API calls from this origin only: no inline script or style, no
frames, no plugins, forms posting only here. Data reaches the page through the
template (escaped) or through ``dashboard.js`` (``textContent``, never HTML).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup
from starlette.responses import HTMLResponse

from lakecache.units import format_duration, format_size

if TYPE_CHECKING:
    from lakecache.server.models import TreeItem

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
STATIC_PREFIX = "/static"

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
)


def size(n: int | float | None) -> str:
    """Bytes for people, as every surface shows them (:func:`lakecache.units.format_size`)."""
    return format_size(n)


def number(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def duration(seconds: float | None) -> str:
    """A span for people (:func:`lakecache.units.format_duration`)."""
    return format_duration(seconds)


def parse_time(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def ago(value: datetime | str | None, now: datetime | None = None) -> str:
    when = parse_time(value)
    if when is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    return "just now" if seconds < 5 else f"{duration(seconds)} ago"


def stamp(value: datetime | str | None) -> str:
    """A time as ``2026-01-01 12:34 UTC``."""
    when = parse_time(value)
    return "–" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(value: datetime | str | None) -> str:
    when = parse_time(value)
    return "" if when is None else when.astimezone(UTC).isoformat()


def urlpath(path: str) -> str:
    """A slash-separated path of a commit, each segment percent-encoded for a URL."""
    return "/".join(quote(seg, safe="") for seg in path.split("/") if seg)


def short(commit_id: str | None) -> str:
    return (commit_id or "")[:12]


def tree_rows(items: Iterable[TreeItem], base: str) -> Markup:
    """The table rows of a folder listing, as one escaped HTML string.

    Written here rather than as a template loop: a page of 200 rows is the
    dashboard's most opened page, and a loop of filters in Jinja holds the
    interpreter for milliseconds, which every other request then waits out.
    """
    out = []
    for e in items:
        folder = e.type == "folder"
        kind = "folder" if folder else (e.content_type or "file")
        out.append(
            f'<tr><th scope="row"><a class="{e.type}" href="{escape(base + urlpath(e.path))}">'
            f"{escape(e.name)}{'/' if folder else ''}</a></th>"
            f'<td class="num" data-label="Size">{size(e.size)}</td>'
            f'<td class="num" data-label="Files">{e.files:,}</td>'
            f'<td data-label="Type">{escape(kind)}</td></tr>\n'
        )
    return Markup("".join(out))  # every value above is escaped


def percent(part: float, whole: float) -> float:
    """``part`` of ``whole`` in percent, 0..100, one decimal (0 when ``whole`` is 0)."""
    if whole <= 0:
        return 0.0
    return round(min(100.0, max(0.0, 100.0 * part / whole)), 1)


@cache
def static_url(name: str) -> str:
    """``/static/<name>?v=<digest>``: the digest changes with the file, so browsers may cache
    it for long and still never run an old script against a new page."""
    digest = hashlib.blake2b((STATIC_DIR / name).read_bytes(), digest_size=6).hexdigest()
    return f"{STATIC_PREFIX}/{quote(name)}?v={digest}"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        size=size,
        number=number,
        duration=duration,
        ago=ago,
        stamp=stamp,
        iso=iso,
        urlpath=urlpath,
        short=short,
    )
    env.globals.update(static=static_url, percent=percent)
    return env


def page(template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """A rendered page with the dashboard's security headers."""
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=page_headers())


def page_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        # Pages show what a session may see: never stored by shared caches or the back button.
        "Cache-Control": "no-store",
    }
