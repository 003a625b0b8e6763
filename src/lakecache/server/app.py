"""The control-plane web app: ``create_app(settings, config)`` builds it, uvicorn serves it.

::

    /healthz                    liveness and catalog reachability (no login)
    /metrics                    Prometheus (no dataset names in it); public unless the
                                config says metrics_public = false
    /api/v1/openapi.json        the API's spec; /api/v1/docs renders it
    /api/v1/auth/...            login (session cookie), logout, token for the CLI
    /api/v1/users, /tokens      accounts
    /api/v1/datasets/...        datasets, members, tags, commits, tree, files, diff, caches
    /api/v1/caches/...          caches across sites: state, progress, pin, clear
    /api/v1/sites, /volumes, /compute, /server

Routers live in :mod:`lakecache.server.routes`, one per concept; the dashboard
(:mod:`lakecache.server.dashboard`) mounts on the same app and calls the same API.

Every request gets an id, returned in the ``X-Request-ID`` header and written
beside anything the server logs about it; a 5xx body gives the id and nothing
else of what went wrong.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lakecache import __version__
from lakecache.catalog.accounts import TOKEN_PREFIX
from lakecache.errors import CatalogError
from lakecache.server import apidocs, dashboard, errors
from lakecache.server.auth import OrgAdmin, Plane, authenticate
from lakecache.server.bodies import JsonBodyLimit
from lakecache.server.config import ServerConfig
from lakecache.server.errors import AuthenticationError, PermissionDeniedError
from lakecache.server.metrics import CONTENT_TYPE
from lakecache.server.models import HealthOut, ServerInfo
from lakecache.server.routes import (
    auth,
    caches,
    commits,
    datasets,
    fills,
    flows,
    jobs,
    lake,
    mlflow_compat,
    topology,
    tracking,
    users,
)
from lakecache.server.runtime import ControlPlane
from lakecache.urls import without_userinfo

if TYPE_CHECKING:
    from lakecache.cache.clock import Clock
    from lakecache.settings import Settings

API_PREFIX = "/api/v1"

_PATH_HINT = (
    "Use plain relative paths: no '..', '.', empty segments, or encoded '/', '\\\\', '.' or NUL."
)
#: Percent-encodings refused anywhere in a request path: they can smuggle a separator or a
#: dot-segment past routing into a path parameter.
_SMUGGLED = (b"%2f", b"%5c", b"%2e", b"%00")


def create_app(
    settings: Settings,
    config: ServerConfig | None = None,
    *,
    plane: ControlPlane | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """The web app for ``settings`` and ``config``.

    Pass an opened ``plane`` to share it (the ``lakecache server`` command opens
    one first, to print the first admin's password); otherwise the app opens its
    own now and closes it when the server shuts down. Agents start with the app
    and stop with it.
    """
    config = config or ServerConfig()
    owned = plane is None
    if plane is None:
        plane = ControlPlane.open(settings, config, clock=clock)
    opened: ControlPlane = plane

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from lakecache.flows.engine import FlowAdvancer

        flow_advancer = FlowAdvancer(opened.hub)  # flow runs go on while nobody watches
        opened.start_agents()
        opened.start_maintenance()
        flow_advancer.start()
        try:
            yield
        finally:
            flow_advancer.stop()
            opened.stop_maintenance()
            opened.stop_agents()
            if owned:
                opened.close()

    app = FastAPI(
        title="lakecache",
        version=__version__,
        summary="Versioned datasets in the data lake, cached next to the compute.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # apidocs serves the page without a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.plane = opened
    errors.install(app)
    # Inside the guard (which gives its 413 the request id and the security headers).
    app.add_middleware(JsonBodyLimit)
    app.add_middleware(_Guard, plane=opened)

    for module in (
        auth,
        users,
        datasets,
        commits,
        caches,
        fills,
        topology,
        jobs,
        flows,
        tracking,
        lake,
    ):
        app.include_router(module.router, prefix=API_PREFIX)
    # MLflow's REST API (the subset its client logs with), at MLflow's own paths.
    app.include_router(mlflow_compat.router)
    app.add_api_route(
        f"{API_PREFIX}/server",
        server_info,
        methods=["GET"],
        response_model=ServerInfo,
        tags=["server"],
        responses=errors.COMMON_RESPONSES,
    )
    app.add_api_route(
        "/healthz",
        healthz,
        methods=["GET"],
        response_model=HealthOut,
        tags=["server"],
        responses={503: {"model": HealthOut}},
    )
    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        response_class=Response,
        tags=["server"],
        responses={
            200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"},
            401: errors.COMMON_RESPONSES[401],
            403: errors.COMMON_RESPONSES[403],
        },
    )
    apidocs.install(app, API_PREFIX, f"{API_PREFIX}/openapi.json")
    dashboard.install(app)
    return app


def healthz(plane: Plane) -> JSONResponse:
    """Up, and whether the catalog answers. 503 when it does not."""
    try:
        plane.accounts.count_users()
        body = HealthOut(status="ok", catalog="ok", version=__version__)
        return JSONResponse(body.model_dump(), status_code=200)
    except CatalogError as exc:
        errors.log.warning("health check: %s", exc.message)
        body = HealthOut(status="degraded", catalog="unavailable", version=__version__)
        return JSONResponse(body.model_dump(), status_code=503)


def metrics(request: Request, plane: Plane) -> Response:
    """Volumes (capacity, committed, free), caches by state, fills, HTTP requests.

    Public by default. With ``metrics_public = false`` only org admins (token or
    session) and, if set, the bearer of ``metrics_token`` (a scraper's secret,
    no account) may read it.
    """
    if not plane.config.metrics_public:
        _check_scraper(request, plane)
    return Response(plane.metrics.render(), media_type=CONTENT_TYPE)


def _check_scraper(request: Request, plane: ControlPlane) -> None:
    """Let through the metrics token's bearer and org admins; 401 or 403 for anyone else."""
    expected = plane.config.metrics_token
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if expected and scheme.lower() == "bearer":
        if hmac.compare_digest(sent.strip().encode(), expected.encode()):
            return
        if not sent.strip().startswith(f"{TOKEN_PREFIX}_"):
            raise AuthenticationError(
                "wrong metrics token", hint="Send the server's metrics_token as a Bearer token."
            )
    principal = authenticate(request, plane)
    if principal is None:
        raise AuthenticationError(
            "/metrics needs a login on this server",
            hint="Send the server's metrics_token (or an org admin's API token) as a Bearer token.",
        )
    if not principal.org_admin:
        raise PermissionDeniedError(
            "only org admins and the metrics scraper may read /metrics", hint="Ask an org admin."
        )


def server_info(_: OrgAdmin, plane: Plane) -> ServerInfo:
    """What this server serves (org admins). The lake's location, never its credentials."""
    lake = plane.settings.lake_url
    if lake.startswith("s3://") and plane.settings.s3_endpoint:
        lake = f"{lake} at {without_userinfo(plane.settings.s3_endpoint)}"
    return ServerInfo(
        version=__version__, lake=lake, catalog=plane.hub.catalog.url, agents=plane.agent_sites
    )


def path_problem(raw_path: bytes, path: str) -> str | None:
    """Why a request path is refused, or None. Checked before routing, on every request."""
    lowered = raw_path.lower()
    if any(s in lowered for s in _SMUGGLED):
        # Usually a name with '/' or '.' in it, URL-encoded by the client: say so in words.
        return (
            "a name in the request path holds an encoded '/', '\\', '.' or NUL; names hold "
            "only letters, digits, '.', '_' and '-', and a file path inside a dataset is "
            "written with plain '/'"
        )
    if "\\" in path or "\x00" in path:
        return "backslash or NUL in the request path"
    segments = path.split("/")[1:]
    if any(s in (".", "..") for s in segments):
        return "'.' or '..' in the request path"
    if any(s == "" for s in segments[:-1]):
        return "empty segment ('//') in the request path"
    return None


class _Guard:
    """Gives each request its id, refuses smuggled paths, adds security headers, answers
    failures no handler took with a bare 500, and counts requests for /metrics."""

    def __init__(self, app: ASGIApp, plane: ControlPlane) -> None:
        self.app = app
        self.plane = plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        responded = False
        api = scope["path"].startswith("/api/")
        # Ours, never the client's: a client's value would go into the log unchecked.
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_headers(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = True
                headers = MutableHeaders(scope=message)
                headers[errors.REQUEST_ID_HEADER] = request_id
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "same-origin")
                if api and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        raw = scope.get("raw_path") or scope["path"].encode()
        problem = path_problem(raw.split(b"?", 1)[0], scope["path"])
        try:
            if problem is not None:
                response = errors.error_response(
                    400, "invalid_path", problem, _PATH_HINT, request_id=request_id
                )
                await response(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            status = 500
            errors.log.error(
                "request %s: internal error on %s %s",
                request_id,
                scope["method"],
                scope["path"],
                exc_info=exc,
            )
            if responded:  # too late for a status: the client sees the connection cut
                raise
            failure = errors.internal_error_response(500, "internal", request_id)
            await failure(scope, receive, send_with_headers)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or ("refused" if problem else "unmatched")
            if api and template.startswith("/") and not template.startswith(API_PREFIX):
                template = API_PREFIX + template  # routers included with a prefix keep theirs apart
            m = self.plane.metrics
            m.http_requests.labels(scope["method"], template, str(status)).inc()
            m.http_duration.labels(scope["method"], template).observe(time.perf_counter() - started)
