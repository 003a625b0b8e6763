"""The web dashboard: server-rendered pages at ``/``, a stylesheet and one small script.

No build step: the pages are Jinja2 templates (autoescaped), ``static/dashboard.js``
is hand-written vanilla JavaScript that calls the REST API with the session
cookie and the CSRF header, and ``static/dashboard.css`` lays it out for a
1280 px screen and a phone alike. :func:`install` mounts it on the app.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from lakecache.server.dashboard.compute_pages import router as compute_router
from lakecache.server.dashboard.flow_pages import router as flow_router
from lakecache.server.dashboard.pages import router
from lakecache.server.dashboard.render import STATIC_DIR, STATIC_PREFIX
from lakecache.server.dashboard.tracking_pages import router as tracking_router

__all__ = ["install", "router"]


def install(app: FastAPI) -> None:
    """Serve the dashboard's pages and its static files from ``app``."""
    app.include_router(router)
    app.include_router(compute_router)
    app.include_router(tracking_router)
    app.include_router(flow_router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="dashboard-static")
