"""Work through a lakecache server: its catalog and its lake, without the lake's credentials.

:class:`~lakecache.data.hub.Hub` builds these when a server is configured
(``LAKECACHE_SERVER`` and ``LAKECACHE_TOKEN``, or ``lakecache login``), so the
SDK and the CLI run unchanged against a server. Only the hub imports this
package, and only then: httpx and urllib3 load for server work alone.
"""

from __future__ import annotations

from lakecache.client.catalog import RemoteCatalog
from lakecache.client.connection import ServerConnection, find_server
from lakecache.client.errors import AccessDeniedError, ServerError, ServerUnreachableError
from lakecache.client.lake import RemoteLake

__all__ = [
    "AccessDeniedError",
    "RemoteCatalog",
    "RemoteLake",
    "ServerConnection",
    "ServerError",
    "ServerUnreachableError",
    "find_server",
]
