"""The control plane's long-lived parts: the hub, accounts, cache service and site agents.

:meth:`ControlPlane.open` does everything that must happen once before the
first request: open (and migrate) the catalog, set up the sites of the config
(or the embedded default), create the first admin. :meth:`start_agents` and
:meth:`close` bracket the server's life. The web app only reads from here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakecache.cache.clock import Clock, SystemClock
from lakecache.cache.service import CacheService
from lakecache.catalog.accounts import Accounts
from lakecache.catalog.topology import Topology
from lakecache.data.hub import Hub
from lakecache.errors import AlreadyExistsError, LakecacheError
from lakecache.lake.objects import Commit
from lakecache.server.config import (
    DEFAULT_SITE,
    ComputeSpec,
    ServerConfig,
    SiteSpec,
    VolumeSpec,
)
from lakecache.server.lookups import (
    COMMIT_CACHE_SIZE,
    BoundedCache,
    CommitKey,
    CredentialCache,
    PageCache,
)
from lakecache.server.metrics import MeteredCacheService, Metrics, catalog_snapshot

if TYPE_CHECKING:
    from lakecache.cache.agent import SiteAgent
    from lakecache.catalog.db import Catalog
    from lakecache.settings import Settings

log = logging.getLogger("lakecache.server")


@dataclass(frozen=True)
class Bootstrap:
    """What the first start did, for the command to print once."""

    admin_name: str | None = None
    #: Set only when the server generated it; never logged.
    admin_password: str | None = None
    created_sites: tuple[str, ...] = ()


class ControlPlane:
    """Everything the API serves from. One per server process; thread-safe."""

    def __init__(
        self, settings: Settings, config: ServerConfig, *, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.config = config
        self.clock = clock or SystemClock()
        self.hub = Hub(settings, remote=False)  # the server is the catalog's owner, never a client
        self.metrics = Metrics()
        self.metrics.watch_catalog(lambda: catalog_snapshot(self.hub.catalog))
        self._accounts: Accounts | None = None
        self._agents: list[tuple[SiteAgent, threading.Thread]] = []
        self._agent_sites: list[str] = []
        self._maintenance: threading.Thread | None = None
        self._maintenance_stop = threading.Event()
        self.bootstrap = Bootstrap()
        # One build of a manifest's local index at a time per manifest, so fifty
        # first visitors of a big commit do not fetch and index it fifty times.
        self._index_locks: dict[str, threading.Lock] = {}
        self._index_locks_guard = threading.Lock()
        #: Commits read so far (immutable), by dataset identity and id: see server.lookups.
        self.commits: BoundedCache[CommitKey, Commit] = BoundedCache(COMMIT_CACHE_SIZE)
        #: Credentials and roles read in the last few seconds: see server.lookups.
        self.credentials = CredentialCache()
        #: Listing pages of commits (immutable), as sent: see server.lookups.
        self.pages = PageCache()

    @classmethod
    def open(
        cls, settings: Settings, config: ServerConfig, *, clock: Clock | None = None
    ) -> ControlPlane:
        """Open the catalog, set up sites and the first admin. Raises LakecacheError subclasses."""
        plane = cls(settings, config, clock=clock)
        try:
            plane._setup()
        except BaseException:
            plane.close()
            raise
        return plane

    @property
    def accounts(self) -> Accounts:
        """The catalog's accounts; any change made through them (a token revoked, a member
        removed, ...) drops the credentials and roles this server keeps, at once."""
        if self._accounts is None:
            self._accounts = _ForgetfulAccounts(self.hub.catalog, self.credentials.forget_all)
        return self._accounts

    @property
    def topology(self) -> Topology:
        return Topology(self.hub.catalog)

    def caches(self) -> CacheService:
        return MeteredCacheService(self.hub, self.metrics, clock=self.clock)

    def index_lock(self, manifest: str) -> threading.Lock:
        with self._index_locks_guard:
            return self._index_locks.setdefault(manifest, threading.Lock())

    # -- start ---------------------------------------------------------------------------

    def _setup(self) -> None:
        catalog = self.hub.catalog  # opens and migrates
        log.info("catalog %s, lake %s", catalog.url, _lake_url(self.settings.lake_url))
        created = self._ensure_sites()
        admin, password = self._ensure_admin()
        self.bootstrap = Bootstrap(admin, password, tuple(created))

    def _ensure_sites(self) -> list[str]:
        topo = self.topology
        now = self.clock.now()
        specs = list(self.config.sites)
        if not specs and not topo.list_sites():
            specs = [_embedded_site(self.settings)]
        self._agent_sites = [s.name for s in specs if s.agent]
        existing_sites = {s.name for s in topo.list_sites()}
        existing_volumes = {v.name for v in topo.list_volumes()}
        existing_compute = {c.name for c in topo.list_compute()}
        created = []
        # Another server process starting at the same time may create any of these first.
        for spec in specs:
            if spec.name not in existing_sites:
                with contextlib.suppress(AlreadyExistsError):
                    topo.add_site(spec.name, spec.description, now)
                created.append(spec.name)
            for v in spec.volumes:
                if v.name in existing_volumes:
                    continue
                if spec.agent:  # mounted here; another site's mount path means nothing here
                    Path(v.root).mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(AlreadyExistsError):
                    topo.add_volume(v.name, spec.name, v.root, v.capacity, v.ttl_seconds, now)
            for c in spec.compute:
                if c.name not in existing_compute:
                    with contextlib.suppress(AlreadyExistsError):
                        topo.add_compute(c.name, spec.name, c.backend, dict(c.config), [], now)
        return created

    def _ensure_admin(self) -> tuple[str | None, str | None]:
        accounts = self.accounts
        if accounts.count_users():
            return None, None
        generated = self.config.admin_password is None
        password = self.config.admin_password or secrets.token_urlsafe(15)
        try:
            accounts.create_user(
                self.config.admin_name, password, org_admin=True, now=self.clock.now()
            )
        except AlreadyExistsError:  # another server process made it first
            return None, None
        log.info("created the first org admin %r", self.config.admin_name)
        return self.config.admin_name, password if generated else None

    @property
    def in_process_agent_sites(self) -> list[str]:
        """Sites whose agent this server runs itself (started with the app), by the config."""
        return list(self._agent_sites) if self.config.agents else []

    @property
    def agent_sites(self) -> list[str]:
        """Sites whose agent runs in this process (once started)."""
        return [agent.site for agent, _ in self._agents]

    def start_agents(self) -> None:
        """Start an agent thread for each site the config runs in-process (once)."""
        if not self.config.agents or self._agents:
            return
        from lakecache.cache.agent import SiteAgent

        for site in self._agent_sites:
            agent = SiteAgent(self.caches(), site, interval=self.config.agent_interval)
            thread = threading.Thread(target=agent.run_forever, name=f"agent-{site}", daemon=True)
            thread.start()
            self._agents.append((agent, thread))
            log.info("agent for site %r runs in this server", site)

    def start_maintenance(self) -> None:
        """Start the thread that cleans up after interrupted uploads, hourly (once)."""
        if self._maintenance is not None:
            return
        self._maintenance_stop.clear()
        self._maintenance = threading.Thread(target=self._maintain, name="maintenance", daemon=True)
        self._maintenance.start()

    def _maintain(self) -> None:
        every = self.config.maintenance_interval.total_seconds()
        while not self._maintenance_stop.wait(every):
            self.maintenance_pass()

    def maintenance_pass(self) -> bool:
        """One maintenance pass, in one replica at a time; False if another one is in it.

        Replicas share the catalog and the lake: the pass (and the lake gc in it) runs
        under a cluster-wide lock (:func:`lakecache.catalog.leader.exclusive`).
        """
        from lakecache.catalog.leader import exclusive

        try:
            with exclusive(self.hub.catalog, "server-maintenance") as held:
                if not held:
                    log.debug("maintenance: another replica is running it")
                    return False
                self.maintain_once()
                if self.config.lake_gc:
                    self.collect_lake_garbage()
                return True
        except Exception as exc:  # noqa: BLE001 - e.g. the catalog unreachable: next pass
            log.warning("maintenance pass failed: %s", getattr(exc, "message", exc))
            return False

    def maintain_once(self) -> int:
        """Drop uploads left open longer than ``upload_expiry``; how many went.

        Without this, the parts of a commit killed midway stay in the bucket,
        billed and invisible, unless the bucket has a lifecycle rule.
        """
        try:
            dropped = self.hub.lake.abort_stale_uploads(self.config.upload_expiry)
        except LakecacheError as exc:
            log.warning("cleaning up interrupted uploads failed: %s", exc.message)
            return 0
        if dropped:
            log.info(
                "dropped %d interrupted upload(s) left open over %s",
                dropped,
                self.config.upload_expiry,
            )
        return dropped

    def collect_lake_garbage(self) -> int:
        """One lake garbage collection (opt-in: ``lake_gc``); bytes freed, 0 on failure.

        Safe while commits run (see :mod:`lakecache.data.gc`); a failure is
        logged and the next maintenance pass tries again.
        """
        from lakecache.data.gc import collect

        try:
            result = collect(self.hub.lake, self.hub.catalog, grace=self.config.lake_gc_grace)
        except LakecacheError as exc:
            log.warning("lake garbage collection failed: %s", exc.message)
            return 0
        log.info(
            "lake gc: deleted %d object(s), %d bytes; %d condemned, %d pack(s) rewritten",
            result.deleted,
            result.bytes_freed,
            len(result.plan.condemn),
            result.repacked,
        )
        return result.bytes_freed

    def stop_maintenance(self) -> None:
        self._maintenance_stop.set()
        if self._maintenance is not None:
            self._maintenance.join(timeout=60)
            self._maintenance = None

    def stop_agents(self) -> None:
        """Stop the agents after their current pass (fills in flight finish first)."""
        for agent, _ in self._agents:
            agent.stop_event.set()
        for _, thread in self._agents:
            thread.join(timeout=60)
        self._agents.clear()

    def close(self) -> None:
        """Stop the agents and the maintenance thread, and close the catalog."""
        self.stop_agents()
        self.stop_maintenance()
        self.hub.close()


#: Accounts methods that take no right away (reads, and what only adds: the server keeps
#: only what was granted, never a refusal): every other public method, one added later
#: included, makes the server forget the credentials and roles it keeps.
_ACCOUNT_READS = frozenset(
    {
        "authenticate_token",
        "authenticate_token_until",
        "check_password",
        "count_users",
        "create_owned_dataset",
        "create_session",
        "create_token",
        "create_user",
        "record_login",
        "dataset_and_role",
        "get_member",
        "get_session",
        "get_token",
        "get_user",
        "list_members",
        "list_tokens",
        "list_users",
        "login_refusal",
        "oldest_failure",
        "recent_failures",
        "role_of",
        "roles_of",
    }
)


class _ForgetfulAccounts(Accounts):
    """:class:`Accounts` that calls ``changed`` after any method outside :data:`_ACCOUNT_READS`
    (whether it succeeded or not: a failed change may have half-happened elsewhere)."""

    def __init__(self, catalog: Catalog, changed: Callable[[], None]) -> None:
        super().__init__(catalog)
        self._changed = changed

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name.startswith("_") or name in _ACCOUNT_READS or not callable(value):
            return value
        changed = super().__getattribute__("_changed")

        @functools.wraps(value)
        def changing(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            finally:
                changed()

        return changing


def _embedded_site(settings: Settings) -> SiteSpec:
    """One site with one volume under the home, sized like the filesystem it is on."""
    import os

    root = settings.home / "cache"
    root.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(root)
    capacity = max(st.f_blocks * st.f_frsize, 1)
    return SiteSpec(
        name=DEFAULT_SITE,
        description="this machine (embedded default)",
        volumes=(VolumeSpec(DEFAULT_SITE, str(root), capacity),),
        compute=(ComputeSpec(DEFAULT_SITE, "local"),),
        agent=True,
    )


def _lake_url(url: str) -> str:
    """The lake URL for the log: scheme, bucket and prefix only."""
    return url.split("@")[-1] if "://" in url else url
