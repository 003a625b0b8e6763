"""Work through a lakecache server: its catalog and its lake, without the lake's credentials.

:class:`~lakecache.data.hub.Hub` builds these when a server is configured
(``LAKECACHE_SERVER`` and ``LAKECACHE_TOKEN``, or ``lakecache login``), so the
SDK and the CLI run unchanged against a server; the cache layer asks for
:class:`RemoteTopology` the same way. Names load on first use: a hub
that works directly asks only :func:`find_server` (standard library only), and
httpx and urllib3 load for server work alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lakecache.client.catalog import RemoteCatalog
    from lakecache.client.connection import ServerConnection
    from lakecache.client.errors import AccessDeniedError, ServerError, ServerUnreachableError
    from lakecache.client.lake import RemoteLake
    from lakecache.client.login import find_server
    from lakecache.client.topology import RemoteTopology

__all__ = [
    "AccessDeniedError",
    "RemoteCatalog",
    "RemoteLake",
    "RemoteTopology",
    "ServerConnection",
    "ServerError",
    "ServerUnreachableError",
    "find_server",
]

_WHERE = {
    "AccessDeniedError": "errors",
    "RemoteCatalog": "catalog",
    "RemoteLake": "lake",
    "RemoteTopology": "topology",
    "ServerConnection": "connection",
    "ServerError": "errors",
    "ServerUnreachableError": "errors",
    "find_server": "login",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'lakecache.client' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lakecache.client.{module}"), name)
