"""The dashboard's pages: server-rendered HTML over the same functions the REST API serves.

::

    /login                                   log in (dashboard.js posts to /api/v1/auth/login)
    /                                        datasets: search, size, files, commits, where cached
    /datasets/{d}                            version hub: lineage graph, commits, caches, compare
    /datasets/{d}/tree/{ref}[/{path}]        file browser of a commit; a file path: its preview
    /datasets/{d}/diff?from=&to=             what changed between two commits
    /caches                                  per site and volume: capacity, caches, clear
    /sites                                   sites with their volumes and compute

Each page calls the API's route functions with the caller's principal, so a
page shows exactly what the API would give the same person, and the same 404
hides a dataset from a non-member. No page changes anything: changes are the
API's, called by ``dashboard.js`` with the session's CSRF token. A request
without a valid session is sent to the login page.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Path, Query, Request
from markupsafe import Markup
from starlette.responses import RedirectResponse, Response

from lakecache.catalog.accounts import ROLE_RANK
from lakecache.errors import LakecacheError
from lakecache.lake.objects import normalize_folder
from lakecache.server.auth import (
    Plane,
    Principal,
    authenticate,
    require_access,
    visible_datasets,
)
from lakecache.server.dashboard import render
from lakecache.server.dashboard.lineage import layout
from lakecache.server.dashboard.preview import text_preview
from lakecache.server.errors import (
    AuthenticationError,
    PermissionDeniedError,
    log,
    request_id_of,
    status_of,
)
from lakecache.server.lookups import commit_at
from lakecache.server.models import CacheOut, DatasetOut, TreeItem, VolumeOut
from lakecache.server.pagination import PageRequest, encode_cursor
from lakecache.server.params import DatasetName
from lakecache.server.routes import caches as caches_api
from lakecache.server.routes import commits as commits_api
from lakecache.server.routes import datasets as datasets_api
from lakecache.server.routes import topology as topology_api
from lakecache.server.runtime import ControlPlane

router = APIRouter(include_in_schema=False)

#: Rows per page: a folder of 200,000 files shows its first 200, then "Load more".
TREE_PAGE = 200
DIFF_PAGE = 200
DATASETS_PAGE = 50
COMMITS_PAGE = 100
#: Caches per page of the caches view (they are few: one per commit and volume).
CACHES_LIMIT = 1000

Ref = Annotated[str, Path(min_length=1, max_length=128)]
Cursor = Annotated[str | None, Query(max_length=1024)]


@dataclass(frozen=True)
class Viewer:
    """Who is looking, and the plane to read from."""

    principal: Principal
    plane: ControlPlane

    def paging(self, limit: int, cursor: str | None) -> PageRequest:
        return PageRequest(limit, cursor or None)


View = Callable[[Viewer], tuple[str, dict[str, Any]]]


# --- plumbing -----------------------------------------------------------------------------


def _viewer(request: Request, plane: ControlPlane) -> Principal | None:
    try:
        return authenticate(request, plane)
    except AuthenticationError:  # an ended session: log in again
        return None


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)


def _render(request: Request, plane: ControlPlane, view: View) -> Response:
    """Authenticate, run ``view``, render its template; errors become an HTML error page."""
    principal = _viewer(request, plane)
    if principal is None:
        return _login_redirect(request)
    viewer = Viewer(principal, plane)
    try:
        if principal.job is not None:
            # A running job's token reads its inputs through the API; the pages (lists of
            # its submitter's runs and experiments included) are for people.
            raise PermissionDeniedError(
                f"this is the token of job {principal.job.job_id}: it opens no dashboard page",
                hint="Log in as yourself to use the dashboard.",
            )
        template, context = view(viewer)
    except LakecacheError as exc:
        status, code = status_of(exc)
        if status >= 500:
            # As in the API: the page names the request, the log holds what went wrong
            # (a catalog error can carry the database's address).
            rid = request_id_of(request)
            log.error("dashboard %s: request %s: %s: %s", request.url.path, rid, code, exc.message)
            exc = LakecacheError(
                f"internal error (request id {rid})",
                hint="Try again later. If it persists, give the server's operator the request "
                f"id {rid}: the server log has the details.",
            )
        context = {"title": "Error", "section": "", "status": status, "error": exc}
        return render.page("error.html", _base(viewer, context), status=status)
    return render.page(template, _base(viewer, context))


def _base(viewer: Viewer, context: dict[str, Any]) -> dict[str, Any]:
    return {
        "user": viewer.principal.user,
        "csrf": viewer.principal.csrf_token or "",
        "now": viewer.plane.clock.now(),
        **context,
    }


#: Browsers drop tab, CR and LF anywhere in a URL ("/\t/evil" goes to "//evil") and stop
#: at NUL; no path of this site holds a control character.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Encoded separators, dots and controls in the path part: the app refuses them in a path
#: (lakecache.server.app.path_problem), and a second decoding would make them real.
_ENCODED = re.compile(r"%(2f|5c|2e|00|09|0a|0d)", re.IGNORECASE)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site, never another origin.

    Anything else becomes ``/``: a target not starting with exactly one ``/``
    (``//evil``, ``/\\evil``, ``https://evil``, ``javascript:``), or holding a
    backslash (browsers read it as ``/``), a control character, or an encoded
    ``/``, ``\\``, ``.`` or control character before its query. The dashboard's
    script checks the same again before it navigates (``safeNext``).
    """
    if not target or len(target) > 2048:
        return "/"
    if not target.startswith("/") or target[1:2] in ("/", "\\"):
        return "/"
    if "\\" in target or _CONTROL.search(target):
        return "/"
    path = re.split(r"[?#]", target, maxsplit=1)[0]
    if _ENCODED.search(path):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _can_write(role: str) -> bool:
    return ROLE_RANK[role] >= ROLE_RANK["writer"]


def _cache_sites(plane: ControlPlane) -> list[str]:
    """Sites that have a cache volume, so a "Cache on <site>" can be asked of them."""
    return sorted({v.site for v in plane.topology.list_volumes()})


# --- pages --------------------------------------------------------------------------------


@router.get("/login")
def login_page(
    request: Request,
    plane: Plane,
    next_: Annotated[str | None, Query(alias="next", max_length=2048)] = None,
) -> Response:
    target = safe_next(next_)
    if _viewer(request, plane) is not None:
        return RedirectResponse(target, status_code=303)
    context = {"title": "Log in", "next": target, "user": None, "csrf": "", "section": ""}
    return render.page("login.html", context)


@router.get("/")
def datasets_page(
    request: Request,
    plane: Plane,
    q: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Cursor = None,
) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        query = (q or "").strip()
        page = datasets_api.list_datasets(
            v.principal, v.plane, v.paging(DATASETS_PAGE, cursor), query or None
        )
        more = None
        if page.next_cursor:
            more = "/?" + urlencode({"q": query, "cursor": page.next_cursor})
        return "datasets.html", {
            "title": "Datasets",
            "section": "datasets",
            "q": query,
            "datasets": page.items,
            "total": page.total,
            "more": more,
        }

    return _render(request, plane, view)


@router.get("/datasets/{dataset}")
def dataset_page(
    request: Request, dataset: DatasetName, plane: Plane, cursor: Cursor = None
) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        ds: DatasetOut = datasets_api.get_dataset(dataset, v.principal, v.plane)
        catalog = v.plane.hub.catalog
        history = catalog.log(dataset)
        tags = catalog.tags(dataset)
        ids = [c.id for c in history]
        graph = layout((cid, c.parents) for cid, c in zip(ids, history, strict=True))
        start = v.paging(COMMITS_PAGE, cursor).offset()
        end = min(start + COMMITS_PAGE, len(history))
        rows = [
            {"id": ids[i], "commit": history[i], "tags": tags.get(ids[i], []), "g": graph.rows[i]}
            for i in range(start, end)
        ]
        older = None
        if end < len(history):
            older = f"/datasets/{quote(dataset)}?" + urlencode(
                {"cursor": encode_cursor({"o": end})}
            )
        cached = caches_api.dataset_caches(
            dataset, v.principal, v.plane, v.paging(CACHES_LIMIT, None)
        )
        return "dataset.html", {
            "title": dataset,
            "section": "datasets",
            "ds": ds,
            "rows": rows,
            "lanes": graph.width,
            "total_commits": len(history),
            "older": older,
            "choices": [(ids[i], history[i], tags.get(ids[i], [])) for i in range(len(ids))],
            "compare_from": ids[1] if len(ids) > 1 else (ids[0] if ids else ""),
            "compare_to": ids[0] if ids else "",
            "caches": cached.items,
            "can_write": _can_write(ds.role),
            "sites": _cache_sites(v.plane) if _can_write(ds.role) else [],
        }

    return _render(request, plane, view)


@router.get("/datasets/{dataset}/tree/{ref}")
def tree_root_page(
    request: Request, dataset: DatasetName, ref: Ref, plane: Plane, cursor: Cursor = None
) -> Response:
    return _render(request, plane, lambda v: _tree_view(v, dataset, ref, "", cursor))


@router.get("/datasets/{dataset}/tree/{ref}/{path:path}")
def tree_page(
    request: Request,
    dataset: DatasetName,
    ref: Ref,
    path: Annotated[str, Path(min_length=1, max_length=4096)],
    plane: Plane,
    cursor: Cursor = None,
) -> Response:
    return _render(request, plane, lambda v: _tree_view(v, dataset, ref, path, cursor))


@dataclass(frozen=True)
class DatasetHead:
    """What a commit's pages show of its dataset: cheaper than the API's DatasetOut (no stats,
    no caches), as these pages are the ones opened most."""

    name: str
    role: str
    head: str | None


def _tree_view(
    v: Viewer, dataset: str, ref: str, path: str, cursor: str | None
) -> tuple[str, dict[str, Any]]:
    access = require_access(v.plane, v.principal, dataset)  # readers, else the same 404
    role = access.role
    catalog = v.plane.hub.catalog
    commit_id, found = commit_at(v.plane, access.dataset, ref)
    tags, head = catalog.tags_and_head(access.dataset.id)
    commit = commits_api.commit_out(commit_id, found, tags.get(commit_id, []))
    ds = DatasetHead(dataset, role, head)
    folder = normalize_folder(path)
    listing = LISTINGS.get((commit.id, folder, cursor))
    if listing is None:
        listing = _listing(v, dataset, commit.id, folder, cursor)
        LISTINGS.put((commit.id, folder, cursor), listing)
    crumbs = []
    parts = folder.split("/") if folder else []
    for i, name in enumerate(parts):
        crumbs.append({"name": name, "path": "/".join(parts[: i + 1])})
    context: dict[str, Any] = {
        "section": "datasets",
        "ds": ds,
        "commit": commit,
        "ref": ref,
        "crumbs": crumbs,
        "sites": _cache_sites(v.plane) if _can_write(role) else [],
    }
    if listing.file is not None:
        context.update(
            title=f"{listing.file.name} · {dataset}",
            file=listing.file,
            preview=text_preview(v.plane, listing.file),
        )
        return "file.html", context
    more = None
    if listing.next_cursor:
        more = {
            "href": "?" + urlencode({"cursor": listing.next_cursor}),
            "api": f"/api/v1/datasets/{quote(dataset)}/commits/{commit.id}/tree"
            + (f"/{render.urlpath(folder)}" if folder else ""),
            "cursor": listing.next_cursor,
        }
    context.update(
        title=f"{folder or '/'} · {dataset}@{commit.id[:12]}",
        listing=listing,
        more=more,
        folder=folder,
        later_page=bool(cursor),  # reached by "Load more" without JavaScript
    )
    return "tree.html", context


@dataclass(frozen=True)
class Listing:
    """One page of a folder of a commit, rendered: the same for everyone who may read it."""

    #: The page's table rows as HTML (every value escaped).
    rows: Markup
    count: int
    next_cursor: str | None
    folder_files: int
    folder_bytes: int
    #: Set when the path is a file of the commit (its preview page), not a folder.
    file: TreeItem | None = None


class ListingCache:
    """The last ``size`` folder pages rendered, by (commit id, folder, cursor).

    A commit never changes, so neither does a page of one of its folders: the
    50 people who open the same folder of the same commit cost one listing and
    one rendering, not 50. Only what everyone may see is kept; who may see it
    is checked on every request, before the cache is asked. Thread-safe.
    """

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._pages: OrderedDict[tuple[str, str, str | None], Listing] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str | None]) -> Listing | None:
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                self._pages.move_to_end(key)
            return page

    def put(self, key: tuple[str, str, str | None], page: Listing) -> None:
        with self._lock:
            self._pages[key] = page
            self._pages.move_to_end(key)
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()


LISTINGS = ListingCache()


def _listing(v: Viewer, dataset: str, commit_id: str, folder: str, cursor: str | None) -> Listing:
    paging = v.paging(TREE_PAGE, cursor)
    page = commits_api.listing(v.plane, v.principal, dataset, commit_id, folder, paging)
    single = page.items[0] if len(page.items) == 1 else None
    if single is not None and single.type == "file" and single.path == folder:
        return Listing(Markup(""), 1, None, 1, single.size, file=single)
    base = f"/datasets/{quote(dataset, safe='')}/tree/{commit_id}/"
    return Listing(
        rows=render.tree_rows(page.items, base),
        count=len(page.items),
        next_cursor=page.next_cursor,
        folder_files=page.folder_files,
        folder_bytes=page.folder_bytes,
    )


@router.get("/datasets/{dataset}/diff")
def diff_page(
    request: Request,
    dataset: DatasetName,
    plane: Plane,
    from_: Annotated[str | None, Query(alias="from", max_length=128)] = None,
    to: Annotated[str | None, Query(max_length=128)] = None,
    cursor: Cursor = None,
) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        ds = datasets_api.get_dataset(dataset, v.principal, v.plane)
        catalog = v.plane.hub.catalog
        history = catalog.log(dataset)
        tags = catalog.tags(dataset)
        ids = [c.id for c in history]
        target = to or "latest"
        source = from_
        if not source:  # by default: the parent of the target
            target_id = catalog.resolve(dataset, target)
            parents = catalog.get_commit(dataset, target_id).parents
            source = parents[0] if parents else target_id
        result = commits_api.diff(
            dataset, v.principal, v.plane, v.paging(DIFF_PAGE, cursor), source, target
        )
        more = None
        if result.next_cursor:
            query = {"from": result.from_commit, "to": result.to_commit}
            more = {
                "href": "?" + urlencode({**query, "cursor": result.next_cursor}),
                "api": f"/api/v1/datasets/{quote(dataset)}/diff?" + urlencode(query),
                "cursor": result.next_cursor,
            }
        return "diff.html", {
            "title": f"Compare · {dataset}",
            "section": "datasets",
            "ds": ds,
            "diff": result,
            "more": more,
            "choices": [(ids[i], history[i], tags.get(ids[i], [])) for i in range(len(ids))],
        }

    return _render(request, plane, view)


@router.get("/caches")
def caches_page(request: Request, plane: Plane) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        everything = v.paging(CACHES_LIMIT, None)
        volumes = topology_api.list_volumes(v.principal, v.plane, everything).items
        listed = caches_api.list_caches(v.principal, v.plane, everything).items
        roles = visible_datasets(v.plane, v.principal)
        sites = v.plane.topology.list_sites()
        return "caches.html", {
            "title": "Caches",
            "section": "caches",
            "sites": [
                {
                    "site": s,
                    "volumes": [
                        {"volume": vol, "bar": capacity(vol), "caches": _on(listed, vol.name)}
                        for vol in volumes
                        if vol.site == s.name
                    ],
                }
                for s in sites
            ],
            "writable": _writable(roles, listed),
        }

    return _render(request, plane, view)


def _on(caches: list[CacheOut], volume: str) -> list[CacheOut]:
    return [c for c in caches if c.volume == volume]


def _writable(roles: dict[str, str] | None, caches: list[CacheOut]) -> set[str]:
    """Datasets among ``caches`` whose caches the caller may clear."""
    names = {c.dataset for c in caches}
    if roles is None:  # org admin
        return names
    return {n for n in names if n in roles and _can_write(roles[n])}


@dataclass(frozen=True)
class Capacity:
    """A volume's bar: percentages of its quota, and the figures behind them."""

    committed: int
    available: int
    #: Quota the filesystem cannot give (it is fuller than the quota allows).
    blocked: int
    quota: int
    committed_pct: float
    available_pct: float
    blocked_pct: float


def capacity(vol: VolumeOut) -> Capacity:
    quota = max(vol.capacity, 0)
    committed = min(vol.committed, quota) if quota else vol.committed
    available = max(0, min(vol.available, quota - committed))
    blocked = max(0, quota - committed - available)
    return Capacity(
        committed=vol.committed,
        available=vol.available,
        blocked=blocked,
        quota=quota,
        committed_pct=render.percent(committed, quota),
        available_pct=render.percent(available, quota),
        blocked_pct=render.percent(blocked, quota),
    )


@router.get("/sites")
def sites_page(request: Request, plane: Plane) -> Response:
    def view(v: Viewer) -> tuple[str, dict[str, Any]]:
        everything = v.paging(CACHES_LIMIT, None)
        sites = topology_api.list_sites(v.principal, v.plane, everything).items
        volumes = topology_api.list_volumes(v.principal, v.plane, everything).items
        compute = topology_api.list_compute(v.principal, v.plane, everything).items
        return "sites.html", {
            "title": "Sites and compute",
            "section": "sites",
            "sites": [
                {
                    "site": s,
                    "volumes": [(vol, capacity(vol)) for vol in volumes if vol.site == s.name],
                    "compute": [c for c in compute if c.site == s.name],
                }
                for s in sites
            ],
        }

    return _render(request, plane, view)
