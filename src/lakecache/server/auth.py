"""Who is asking, and what they may do.

Two ways in:

* ``Authorization: Bearer lct_...``: an API token (CLI, SDK, scripts). No
  cookie is looked at when this header is present.
* The ``lakecache_session`` cookie set by ``POST /api/v1/auth/login``
  (the dashboard): HttpOnly, SameSite=Lax. Every unsafe request (POST, PUT,
  PATCH, DELETE) made with it must carry the session's CSRF token in the
  ``X-CSRF-Token`` header; a page on another site can make the browser send
  the cookie, but cannot read the token.

Dataset permissions: the caller's role on the dataset must rank at least as
high as what the endpoint needs (reader < writer < admin); org admins pass
every check. Someone with no role at all gets the very same 404 as for a
dataset that does not exist, so a dataset's name never leaks.

Agent users (``agent_site`` set) are what a site's agent runs as: they read
the datasets cached on their site, fill, verify and evict the caches there,
hold leases on them, and report its volumes' space; nothing else. A site
machine then holds no org admin's token. Two locks keep them there: every API
route an agent user may call at all is in :data:`AGENT_ROUTES` (anything else,
a route added later included, is 403 for them until someone adds it there),
and the routes themselves narrow what they reach to their site's caches and
the datasets cached there. The lake's routes (``/api/v1/lake``) check each
dataset's role themselves, which lets an agent user read and never write.

Job tokens (``lcj_...``, :mod:`lakecache.compute.tokens`) are what a running
job authenticates with: its submitter, narrowed to reading the job's input
datasets (:data:`JOB_ROUTES` and the lake's routes), never an org admin's
rights, and only while that attempt of the job runs.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from lakecache.catalog.accounts import ROLE_RANK, UserRecord
from lakecache.catalog.db import DatasetRecord
from lakecache.compute.tokens import JobGrant, JobTokens, is_job_token
from lakecache.errors import DatasetNotFoundError, NotFoundError
from lakecache.server.errors import AuthenticationError, PermissionDeniedError
from lakecache.server.runtime import ControlPlane

SESSION_COOKIE = "lakecache_session"
_API = "/api/v1"
#: (method, route template): the API an agent user may call. Its own account
#: (session, tokens, password), the sites' shape, its site's caches (read, fill,
#: evict, verify, lease, report space) and reads of the datasets cached there.
AGENT_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", f"{_API}/auth/session"),
        ("POST", f"{_API}/auth/logout"),
        ("GET", f"{_API}/tokens"),
        ("POST", f"{_API}/tokens"),
        ("DELETE", f"{_API}/tokens/{{token_id}}"),
        ("GET", f"{_API}/users/{{name}}"),
        ("PATCH", f"{_API}/users/{{name}}"),
        ("GET", f"{_API}/sites"),
        ("GET", f"{_API}/sites/{{site}}"),
        ("GET", f"{_API}/volumes"),
        ("GET", f"{_API}/volumes/{{volume}}"),
        ("GET", f"{_API}/volumes/{{volume}}/caches"),
        ("PUT", f"{_API}/volumes/{{volume}}/space"),
        ("GET", f"{_API}/compute"),
        ("GET", f"{_API}/caches"),
        ("GET", f"{_API}/caches/{{cache_id}}"),
        ("POST", f"{_API}/caches/{{cache_id}}/claim"),
        ("POST", f"{_API}/caches/{{cache_id}}/heartbeat"),
        ("POST", f"{_API}/caches/{{cache_id}}/ready"),
        ("POST", f"{_API}/caches/{{cache_id}}/failed"),
        ("POST", f"{_API}/caches/{{cache_id}}/eviction"),
        ("POST", f"{_API}/caches/{{cache_id}}/evicted"),
        ("PUT", f"{_API}/caches/{{cache_id}}/report"),
        ("DELETE", f"{_API}/caches/{{cache_id}}/requests/{{request}}"),
        ("POST", f"{_API}/caches/{{cache_id}}/leases"),
        ("PUT", f"{_API}/leases/{{lease_id}}"),
        ("DELETE", f"{_API}/leases/{{lease_id}}"),
        ("GET", f"{_API}/datasets"),
        ("GET", f"{_API}/datasets/{{dataset}}"),
        ("GET", f"{_API}/datasets/{{dataset}}/tags"),
        ("GET", f"{_API}/datasets/{{dataset}}/commits"),
        ("GET", f"{_API}/datasets/{{dataset}}/commits/{{ref}}"),
        ("GET", f"{_API}/datasets/{{dataset}}/commits/{{ref}}/tree"),
        ("GET", f"{_API}/datasets/{{dataset}}/commits/{{ref}}/tree/{{path}}"),
        ("GET", f"{_API}/datasets/{{dataset}}/commits/{{ref}}/files/{{path}}"),
        ("GET", f"{_API}/datasets/{{dataset}}/diff"),
        ("GET", f"{_API}/datasets/{{dataset}}/caches"),
        # Its site's jobs (lakecache.server.routes.jobs): take, run, report, fenced.
        ("GET", f"{_API}/compute/capacity"),
        ("GET", f"{_API}/templates"),
        ("GET", f"{_API}/queues"),
        ("GET", f"{_API}/jobs"),
        ("GET", f"{_API}/jobs/{{job_id}}"),
        ("GET", f"{_API}/jobs/{{job_id}}/log"),
        ("POST", f"{_API}/scheduler/pass"),
        ("GET", f"{_API}/sites/{{site}}/placed-jobs"),
        ("POST", f"{_API}/jobs/{{job_id}}/claim"),
        ("POST", f"{_API}/jobs/{{job_id}}/heartbeat"),
        ("POST", f"{_API}/jobs/{{job_id}}/events"),
        ("POST", f"{_API}/jobs/{{job_id}}/finish"),
        ("POST", f"{_API}/jobs/{{job_id}}/release"),
        ("PUT", f"{_API}/jobs/{{job_id}}/log"),
        ("PUT", f"{_API}/jobs/{{job_id}}/outputs"),
        ("GET", f"{_API}/jobs/{{job_id}}/outputs"),
        ("GET", f"{_API}/jobs/{{job_id}}/outputs/{{path}}"),
        # Runs of its site's jobs (lakecache.server.routes.tracking checks the job's site).
        ("POST", f"{_API}/tracking/job-runs"),
        ("GET", f"{_API}/tracking/runs/{{run_id}}"),
        ("POST", f"{_API}/tracking/runs/{{run_id}}/batch"),
        ("POST", f"{_API}/tracking/runs/{{run_id}}/end"),
        ("POST", f"{_API}/tracking/runs/{{run_id}}/inputs"),
        ("PUT", f"{_API}/tracking/runs/{{run_id}}/artifacts/{{path}}"),
        ("PUT", f"{_API}/tracking/runs/{{run_id}}/logs/{{stream}}"),
    }
)
#: (method, route template): the API a running job's own token may call, besides the
#: lake's routes: reads of the datasets it takes as inputs (see lakecache.compute.tokens),
#: and writing its own job's outputs (the route checks that the job is the token's).
JOB_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", f"{_API}/auth/session"),
        ("GET", f"{_API}/datasets/{{dataset}}"),
        ("GET", f"{_API}/datasets/{{dataset}}/tags"),
        ("GET", f"{_API}/datasets/{{dataset}}/commits"),
        ("GET", f"{_API}/datasets/{{dataset}}/commits/{{ref}}"),
        ("GET", f"{_API}/datasets/{{dataset}}/commits/{{ref}}/tree"),
        ("GET", f"{_API}/datasets/{{dataset}}/commits/{{ref}}/tree/{{path}}"),
        ("GET", f"{_API}/datasets/{{dataset}}/commits/{{ref}}/files/{{path}}"),
        ("PUT", f"{_API}/jobs/{{job_id}}/outputs"),
        # Its own job's runs (lakecache.server.routes.tracking checks the job).
        ("GET", f"{_API}/tracking/runs/{{run_id}}"),
        ("POST", f"{_API}/tracking/runs/{{run_id}}/batch"),
        ("POST", f"{_API}/tracking/runs/{{run_id}}/inputs"),
        ("PUT", f"{_API}/tracking/runs/{{run_id}}/artifacts/{{path}}"),
    }
)
_CONVERTER = re.compile(r"\{(\w+):\w+\}")
#: Routes under this prefix check each dataset's role themselves (see the module's note).
_LAKE_PREFIX = f"{_API}/lake"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Requests that may be answered from credentials and roles read a few seconds ago.
SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    user: UserRecord
    via: Literal["token", "session"]
    csrf_token: str | None = None
    #: Set for a running job's own token: it reads the job's input datasets, as its
    #: submitter, and nothing else.
    job: JobGrant | None = None

    @property
    def org_admin(self) -> bool:
        # A job's token never carries its submitter's org-admin rights.
        return self.user.org_admin and self.job is None


async def get_plane(request: Request) -> ControlPlane:
    # async: FastAPI runs a plain ``def`` dependency in a worker thread, a hop (and a
    # wake-up of the event loop) per dependency per request for what is one attribute.
    plane: ControlPlane = request.app.state.plane
    return plane


def authenticate(request: Request, plane: ControlPlane) -> Principal | None:
    """The caller, None when no credentials came, or AuthenticationError for bad ones.

    A GET or HEAD may be answered from the credentials the server read in the last few
    seconds (:mod:`lakecache.server.lookups`); anything that changes something is
    checked in the catalog.
    """
    now = plane.clock.now()
    reads = request.method in SAFE_METHODS
    credentials = plane.credentials
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
        if is_job_token(token):
            return _job_principal(plane, token, now)
        key = credentials.credential_key("token", token)
        kept = credentials.principal(key, now) if reads else None
        if kept is not None:
            return kept
        generation = credentials.generation
        authed = plane.accounts.authenticate_token_until(token, now)
        if authed is None:
            raise AuthenticationError(
                "the API token is unknown, expired or revoked",
                hint="Log in again with `lakecache login URL` to get a new token.",
            )
        user, token_ends = authed
        principal = Principal(user, "token")
        credentials.keep_principal(key, principal, now, generation, token_ends)
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        key = credentials.credential_key("session", cookie)
        found = credentials.principal(key, now) if reads else None
        if found is None:
            generation = credentials.generation
            session = plane.accounts.get_session(cookie, now)
            if session is None:
                raise AuthenticationError("the session has ended", hint="Log in again.")
            found = Principal(session.user, "session", session.csrf_token)
            credentials.keep_principal(key, found, now, generation, session.expires_at)
        if request.method in UNSAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), (found.csrf_token or "").encode()):
                raise PermissionDeniedError(
                    "missing or wrong CSRF token",
                    hint=f"Send the session's csrf_token (GET /api/v1/auth/session) in the "
                    f"{CSRF_HEADER} header.",
                )
        return found
    return None


def kept_principal(request: Request, plane: ControlPlane) -> Principal | None:
    """The caller of a GET or HEAD as the server kept them a moment ago, or None (then ask
    :func:`authenticate`). Never blocks: memory only."""
    if request.method not in SAFE_METHODS:
        return None
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or is_job_token(token):
            return None
        key = plane.credentials.credential_key("token", token)
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        key = plane.credentials.credential_key("session", cookie)
    return plane.credentials.principal(key, plane.clock.now())


def _job_principal(plane: ControlPlane, token: str, now: datetime) -> Principal:
    grant = JobTokens(plane.hub.catalog).authenticate(token, now)
    user = None
    if grant is not None:
        try:
            user = plane.accounts.get_user(grant.submitted_by)
        except NotFoundError:
            user = None
    if grant is None or user is None or user.disabled:
        raise AuthenticationError(
            "the job token is unknown, or its job attempt has ended",
            hint="A job's token works only while that attempt of the job runs.",
        )
    return Principal(user, "token", job=grant)


async def require_user(
    request: Request, plane: Annotated[ControlPlane, Depends(get_plane)]
) -> Principal:
    """Dependency: an authenticated caller, else 401; an agent user only on
    :data:`AGENT_ROUTES` (and the lake's routes), else 403.

    A caller the server has just seen is found in memory, on the event loop; anyone
    else is looked up in the catalog in a worker thread (it blocks).
    """
    principal = kept_principal(request, plane)
    if principal is None:
        principal = await run_in_threadpool(authenticate, request, plane)
    if principal is None:
        raise AuthenticationError("log in first")
    if principal.job is not None:
        template = route_template(request)
        if not template.startswith(_LAKE_PREFIX) and (request.method, template) not in JOB_ROUTES:
            raise PermissionDeniedError(
                f"this is the token of job {principal.job.job_id}: it reads the job's inputs "
                "and nothing else",
                hint="Do this with your own token (`lakecache login`), not the job's.",
            )
    site = principal.user.agent_site
    if site is not None:
        template = route_template(request)
        if not template.startswith(_LAKE_PREFIX) and (request.method, template) not in (
            AGENT_ROUTES
        ):
            raise PermissionDeniedError(
                f"{principal.user.name!r} is the agent user of site {site!r}: it works that "
                "site's caches and nothing else",
                hint="Do this as a person's user, not the site agent's.",
            )
    return principal


def route_template(request: Request) -> str:
    """The template of the route serving ``request`` (``/api/v1/caches/{cache_id}``)."""
    route: Any = request.scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return request.url.path
    # A route keeps its router's prefix but not the one the app included the router with.
    if request.url.path.startswith(f"{_API}/") and not template.startswith(f"{_API}/"):
        template = _API + template
    return _CONVERTER.sub(r"{\1}", template)  # {path:path} -> {path}, as the API spec says


async def require_org_admin(principal: Annotated[Principal, Depends(require_user)]) -> Principal:
    """Dependency: an org admin, else 403."""
    if not principal.org_admin:
        raise PermissionDeniedError("only org admins may do this", hint="Ask an org admin.")
    return principal


User = Annotated[Principal, Depends(require_user)]
OrgAdmin = Annotated[Principal, Depends(require_org_admin)]
Plane = Annotated[ControlPlane, Depends(get_plane)]


@dataclass(frozen=True)
class DatasetAccess:
    """A dataset and the caller's role on it."""

    role: str
    dataset: DatasetRecord


def dataset_access(plane: ControlPlane, principal: Principal, dataset: str) -> DatasetAccess | None:
    """The dataset and the caller's role on it (org admins: admin); None if the caller has
    no role or there is no such dataset. One catalog query for people and org admins.

    A site's agent user reads the datasets cached (or being cached) on its
    site's volumes, and nothing else: an evicted cache no longer counts.
    """
    catalog = plane.hub.catalog
    try:
        if principal.job is not None:
            # Never more than the submitter may read, and only the job's inputs.
            if dataset not in principal.job.datasets:
                return None
            plain = dataset_access(plane, Principal(principal.user, principal.via), dataset)
            return None if plain is None else DatasetAccess("reader", plain.dataset)
        site = principal.user.agent_site
        if site is not None:
            if dataset not in plane.topology.datasets_cached_at(site):
                return None
            return DatasetAccess("reader", catalog.get_dataset(dataset))
        if principal.org_admin:
            return DatasetAccess("admin", catalog.get_dataset(dataset))
        record, role = plane.accounts.dataset_and_role(principal.user.id, dataset)
    except DatasetNotFoundError:
        return None
    return None if role is None else DatasetAccess(role, record)


def dataset_role(plane: ControlPlane, principal: Principal, dataset: str) -> str | None:
    """The caller's role on ``dataset`` (org admins: admin), None if none or no such dataset."""
    access = dataset_access(plane, principal, dataset)
    return None if access is None else access.role


def require_access(
    plane: ControlPlane, principal: Principal, dataset: str, need: str = "reader"
) -> DatasetAccess:
    """The dataset and the caller's role on it, if the role allows ``need``.

    Raises DatasetNotFoundError (404) when the caller has no role or the dataset
    does not exist, with one message for both, and PermissionDeniedError (403)
    when the role is too low.
    """
    access = _reader_access(plane, principal, dataset) if need == "reader" else None
    if access is None:
        access = dataset_access(plane, principal, dataset)
    if access is None:
        raise DatasetNotFoundError(f"no dataset named {dataset!r}")
    if ROLE_RANK[access.role] < ROLE_RANK[need]:
        raise PermissionDeniedError(
            f"your role on dataset {dataset!r} is {access.role}; this needs {need}",
            hint=f"Ask an admin of {dataset!r} for the {need} role.",
        )
    return access


def kept_reader_access(
    plane: ControlPlane, principal: Principal, dataset: str
) -> DatasetAccess | None:
    """A person's (or org admin's) access to read ``dataset`` as this server kept it a few
    seconds ago (see :mod:`lakecache.server.lookups`); None when it must be asked of the
    catalog. Never blocks. Job tokens and agent users are always asked: their reach
    follows jobs and caches."""
    if principal.job is not None or principal.user.agent_site is not None:
        return None
    return plane.credentials.access(principal.user.id, dataset, plane.clock.now())


def _reader_access(plane: ControlPlane, principal: Principal, dataset: str) -> DatasetAccess | None:
    """:func:`kept_reader_access`, else asked of the catalog (and kept when granted)."""
    if principal.job is not None or principal.user.agent_site is not None:
        return None
    kept = kept_reader_access(plane, principal, dataset)
    if kept is not None:
        return kept
    credentials = plane.credentials
    now = plane.clock.now()
    generation = credentials.generation
    access = dataset_access(plane, principal, dataset)
    if access is not None:
        credentials.keep_access(principal.user.id, dataset, access, now, generation)
    return access


def require_dataset(
    plane: ControlPlane, principal: Principal, dataset: str, need: str = "reader"
) -> str:
    """The caller's role on ``dataset`` if it allows ``need`` (see :func:`require_access`)."""
    return require_access(plane, principal, dataset, need).role


def visible_datasets(plane: ControlPlane, principal: Principal) -> dict[str, str] | None:
    """Dataset -> role for a member; None for an org admin (every dataset, as admin)."""
    if principal.job is not None:
        return {
            d: "reader"
            for d in sorted(principal.job.datasets)
            if dataset_role(plane, principal, d) is not None
        }
    site = principal.user.agent_site
    if site is not None:
        return dict.fromkeys(plane.topology.datasets_cached_at(site), "reader")
    if principal.org_admin:
        return None
    return plane.accounts.roles_of(principal.user.id)
