"""The lake and the catalog of one configuration, opened lazily and shared."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lakecache.catalog import Catalog
    from lakecache.client.connection import ServerConnection
    from lakecache.lake import Lake
    from lakecache.settings import Settings


class Hub:
    """Holds one settings object and the lake and catalog it names.

    Opening is lazy so that a command that only reads the catalog never loads
    the S3 client, and one that only lists never touches the lake.

    Direct or through a server. With a server configured (``settings.server_url``,
    or a ``lakecache login`` saved in the home folder) the lake and the catalog
    are the server's: :class:`~lakecache.client.RemoteLake` and
    :class:`~lakecache.client.RemoteCatalog`, which move bytes with presigned
    URLs and never hold the lake's credentials. ``remote=False`` forces direct
    access (the server itself, and anything that needs the catalog database:
    sites, volumes, caches); ``remote=True`` requires a server.

    Thread-safe. The lake and the catalog have a lock each, so a lake being
    opened in a thread (boto3's import and client: a fill or a commit starts
    that first, to overlap it) never holds up the catalog.
    """

    def __init__(self, settings: Settings, *, remote: bool | None = None) -> None:
        self.settings = settings
        self._remote = remote
        self._server: ServerConnection | None = None
        self._server_known = False
        self._lake: Lake | None = None
        self._catalog: Catalog | None = None
        self._lock = threading.Lock()  # the server connection
        self._lake_lock = threading.Lock()
        self._catalog_lock = threading.Lock()

    @property
    def server(self) -> ServerConnection | None:
        """The server this hub works through, or None when it opens the lake and catalog itself."""
        return self._find_server()

    def _find_server(self) -> ServerConnection | None:
        with self._lock:
            return self._find_server_locked()

    def _find_server_locked(self) -> ServerConnection | None:
        if not self._server_known:
            if self._remote is not False:
                from lakecache.client.login import find_server

                found = find_server(self.settings)
                if found is None and self._remote:
                    from lakecache.errors import UserError

                    raise UserError(
                        "no lakecache server configured",
                        hint="Log in with `lakecache login URL`, or set LAKECACHE_SERVER "
                        "and LAKECACHE_TOKEN.",
                    )
                if found is not None:
                    from lakecache.client.connection import ServerConnection

                    url, token = found
                    self._server = ServerConnection(
                        url,
                        token,
                        timeout=max(self.settings.lake_timeout, 60.0),
                        max_connections=max(64, self.settings.workers * 4),
                    )
            self._server_known = True
        return self._server

    @property
    def author(self) -> str:
        """Whom commits made through this hub name as their author.

        Through a server, the logged-in user (one request, the first time): the
        server refuses a commit by anyone else. Directly, ``settings.author``.
        """
        server = self.server
        return self.settings.author if server is None else server.user_name()

    @property
    def lake(self) -> Lake:
        with self._lake_lock:
            if self._lake is None:
                server = self._find_server()
                if server is not None:
                    from lakecache.client.lake import RemoteLake

                    self._lake = RemoteLake(
                        server,
                        workers=self.settings.workers,
                        retries=self.settings.lake_retries,
                        timeout=self.settings.lake_timeout,
                    )
                else:
                    from lakecache.lake import open_lake

                    self._lake = open_lake(self.settings)
            return self._lake

    @property
    def catalog(self) -> Catalog:
        with self._catalog_lock:
            if self._catalog is None:
                server = self._find_server()
                if server is not None:
                    from lakecache.client.catalog import RemoteCatalog

                    # Same methods, types and errors as the Catalog the data layer uses.
                    remote: Any = RemoteCatalog(server)
                    self._catalog = remote
                else:
                    from lakecache.catalog import Catalog
                    from lakecache.lake.reflog import RefLog

                    self._catalog = Catalog.open(self.settings.catalog_url)
                    # Every dataset and ref change is also written to the lake, which
                    # is opened only when the first change needs it.
                    self._catalog.journal = RefLog(lambda: self.lake)
            assert self._catalog is not None
            return self._catalog

    def open_lake_in_background(self, *, writes: bool = False) -> None:
        """Start opening the lake in a thread, if it is not open: :attr:`lake` waits for it.

        ``writes``: the caller will write, so whatever a lake loads only for
        writes (an S3 lake's botocore client) is made in that thread too.
        """
        if self._lake is not None and not writes:
            return

        def run() -> None:
            try:
                lake = self.lake
                prepare = getattr(lake, "prepare_writes", None) if writes else None
                if prepare is not None:
                    prepare()
            except Exception:  # noqa: BLE001, S110 - the caller's own calls raise it again
                pass

        threading.Thread(target=run, name="lakecache-open-lake", daemon=True).start()

    def close(self) -> None:
        with self._lake_lock, self._catalog_lock, self._lock:
            if self._catalog is not None:
                self._catalog.close()
                self._catalog = None
            if self._server is not None:
                close = getattr(self._lake, "close", None)
                if close is not None:
                    close()
                self._server.close()
                self._server = None
                self._server_known = False
            self._lake = None
