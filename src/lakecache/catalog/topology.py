"""Sites, cache volumes and compute resources in the catalog; caches and leases beside them.

Reached as ``catalog.topology``. Every method that depends on time takes
``now`` from the caller, so tests drive a clock of their own.

Caches and leases live in :mod:`lakecache.catalog.caches` (mixed into
:class:`Topology` as :class:`~lakecache.catalog.caches.CacheRows`), with their
concurrency contract: fenced claims of fills and evictions, and leases and
evictions serialised on the cache row. Their names are importable from here too.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Select, delete, select, update
from sqlalchemy import exc as sa_exc

from lakecache.catalog import topology_tables as tt
from lakecache.catalog.caches import EVICTION_STALE_AFTER, REQUESTS, CacheRecord, CacheRows
from lakecache.catalog.names import check_dataset_name
from lakecache.errors import AlreadyExistsError, NotFoundError, UserError

if TYPE_CHECKING:
    from lakecache.catalog.db import Catalog

DEFAULT_TTL = timedelta(days=1)
BACKENDS = ("local", "container", "ray", "kubernetes")

__all__ = [
    "BACKENDS",
    "DEFAULT_TTL",
    "EVICTION_STALE_AFTER",
    "REQUESTS",
    "CacheRecord",
    "CacheRows",
    "ComputeRecord",
    "SiteRecord",
    "Topology",
    "TopologyStore",
    "VolumeRecord",
]


@functools.cache
def _volume_select() -> Select[Any]:
    """Volumes with their site's name; built once (parameters, not new objects, vary)."""
    return select(
        tt.volumes.c.id,
        tt.volumes.c.name,
        tt.sites.c.name.label("site"),
        tt.volumes.c.root,
        tt.volumes.c.capacity,
        tt.volumes.c.ttl_seconds,
        tt.volumes.c.fs_free,
        tt.volumes.c.fs_total,
        tt.volumes.c.fs_reported_at,
    ).join(tt.sites, tt.sites.c.id == tt.volumes.c.site_id)


@functools.cache
def _volume_list_select() -> Select[Any]:
    return _volume_select().order_by(tt.sites.c.name, tt.volumes.c.name)


@dataclass(frozen=True)
class SiteRecord:
    id: int
    name: str
    description: str


@dataclass(frozen=True)
class VolumeRecord:
    id: int
    name: str
    site: str
    root: str
    capacity: int
    ttl_seconds: int
    #: The filesystem's free and total bytes as an agent at the site last reported them.
    fs_free: int | None = None
    fs_total: int | None = None
    fs_reported_at: datetime | None = None

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.ttl_seconds)


@dataclass(frozen=True)
class ComputeRecord:
    id: int
    name: str
    site: str
    backend: str
    config: dict[str, Any]
    volumes: tuple[str, ...]  # extra volumes it mounts, besides its site's


_NAME_HINT = "Use 1 to 64 characters: lowercase letters, digits, '.', '_' or '-'."


def _check_name(kind: str, name: str) -> str:
    try:
        return check_dataset_name(name)
    except UserError:
        raise UserError(f"invalid {kind} name {name!r}", hint=_NAME_HINT) from None


class Topology(CacheRows):
    """Sites, volumes and compute; caches and leases from :class:`CacheRows`."""

    def __init__(self, catalog: Catalog) -> None:
        self._c = catalog

    # -- sites -------------------------------------------------------------------------

    def add_site(self, name: str, description: str, now: datetime) -> SiteRecord:
        _check_name("site", name)
        try:
            with self._c._write() as conn:
                res = conn.execute(
                    tt.sites.insert().values(name=name, description=description, created_at=now)
                )
                (sid,) = res.inserted_primary_key or (0,)
        except sa_exc.IntegrityError:
            raise AlreadyExistsError(
                f"site {name!r} already exists", hint="List sites with `lakecache site ls`."
            ) from None
        return SiteRecord(int(sid), name, description)

    def list_sites(self) -> list[SiteRecord]:
        with self._c._read() as conn:
            rows = conn.execute(select(tt.sites).order_by(tt.sites.c.name)).all()
        return [SiteRecord(r.id, r.name, r.description) for r in rows]

    def get_site(self, name: str) -> SiteRecord:
        for s in self.list_sites():
            if s.name == name:
                return s
        raise NotFoundError(
            f"no site {name!r}",
            hint="Add it with `lakecache site add NAME`, or list them with `lakecache site ls`.",
        )

    # -- volumes -----------------------------------------------------------------------

    def add_volume(
        self, name: str, site: str, root: str, capacity: int, ttl_seconds: int, now: datetime
    ) -> VolumeRecord:
        _check_name("volume", name)
        if capacity <= 0:
            raise UserError(
                f"volume capacity must be positive, not {capacity}",
                hint="Give a size such as 500GB.",
            )
        if ttl_seconds <= 0:
            raise UserError(
                f"TTL must be positive, not {ttl_seconds} s",
                hint="Give a duration such as 1d or 12h.",
            )
        s = self.get_site(site)
        try:
            with self._c._write() as conn:
                res = conn.execute(
                    tt.volumes.insert().values(
                        name=name,
                        site_id=s.id,
                        root=root,
                        capacity=capacity,
                        ttl_seconds=ttl_seconds,
                        created_at=now,
                    )
                )
                (vid,) = res.inserted_primary_key or (0,)
        except sa_exc.IntegrityError:
            raise AlreadyExistsError(
                f"volume {name!r} already exists", hint="List volumes with `lakecache volume ls`."
            ) from None
        return VolumeRecord(int(vid), name, site, root, capacity, ttl_seconds)

    def update_volume(
        self, name: str, *, capacity: int | None = None, ttl_seconds: int | None = None
    ) -> VolumeRecord:
        """Change a volume's capacity or TTL; returns the volume as it now is.

        A capacity below what caches already hold is allowed: nothing is evicted
        at once, but no new cache fits until eviction (TTL, or room for a fill)
        brings the volume under it.
        """
        if capacity is not None and capacity <= 0:
            raise UserError(
                f"volume capacity must be positive, not {capacity}",
                hint="Give a size such as 500GB.",
            )
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise UserError(
                f"TTL must be positive, not {ttl_seconds} s",
                hint="Give a duration such as 1d or 12h.",
            )
        v = self.get_volume(name)
        values: dict[str, int] = {}
        if capacity is not None:
            values["capacity"] = capacity
        if ttl_seconds is not None:
            values["ttl_seconds"] = ttl_seconds
        if values:
            with self._c._write() as conn:
                conn.execute(update(tt.volumes).where(tt.volumes.c.id == v.id).values(**values))
        return self.get_volume(name)

    def _volume_query(self) -> Any:
        return _volume_select()

    def list_volumes(self, site: str | None = None) -> list[VolumeRecord]:
        q = _volume_list_select()
        if site:
            q = q.where(tt.sites.c.name == site)
        with self._c._read() as conn:
            return [VolumeRecord(*r) for r in conn.execute(q).all()]

    def get_volume(self, name: str) -> VolumeRecord:
        with self._c._read() as conn:
            row = conn.execute(self._volume_query().where(tt.volumes.c.name == name)).one_or_none()
        if row is None:
            raise NotFoundError(
                f"no volume {name!r}", hint="List volumes with `lakecache volume ls`."
            )
        return VolumeRecord(*row)

    def report_volume_space(self, name: str, *, free: int, total: int, now: datetime) -> None:
        """What the volume's filesystem holds, as a machine that mounts it sees it."""
        v = self.get_volume(name)
        with self._c._write() as conn:
            conn.execute(
                update(tt.volumes)
                .where(tt.volumes.c.id == v.id)
                .values(fs_free=free, fs_total=total, fs_reported_at=now)
            )

    def remove_volume(self, name: str) -> None:
        v = self.get_volume(name)
        live = [c for c in self.list_caches(volume=name) if c.state not in ("evicted", "failed")]
        if live:
            raise UserError(
                f"volume {name!r} still holds {len(live)} cache(s): "
                f"{', '.join(c.name for c in live[:5])}",
                hint=f"Clear them first with `lakecache cache rm ... --volume {name}`.",
            )
        with self._c._write() as conn:
            conn.execute(delete(tt.caches).where(tt.caches.c.volume_id == v.id))
            conn.execute(delete(tt.volumes).where(tt.volumes.c.id == v.id))

    # -- compute -----------------------------------------------------------------------

    def add_compute(
        self,
        name: str,
        site: str,
        backend: str,
        config: dict[str, Any],
        volumes: list[str],
        now: datetime,
    ) -> ComputeRecord:
        _check_name("compute resource", name)
        if backend not in BACKENDS:
            raise UserError(
                f"unknown compute backend {backend!r}",
                hint=f"Choose one of: {', '.join(BACKENDS)}.",
            )
        s = self.get_site(site)
        vols = [self.get_volume(v) for v in volumes]
        try:
            with self._c._write() as conn:
                res = conn.execute(
                    tt.compute_resources.insert().values(
                        name=name,
                        site_id=s.id,
                        backend=backend,
                        config=json.dumps(config),
                        created_at=now,
                    )
                )
                (cid,) = res.inserted_primary_key or (0,)
                for v in vols:
                    conn.execute(tt.compute_volumes.insert().values(compute_id=cid, volume_id=v.id))
        except sa_exc.IntegrityError:
            raise AlreadyExistsError(f"compute resource {name!r} already exists") from None
        return ComputeRecord(int(cid), name, site, backend, config, tuple(volumes))

    def list_compute(self, site: str | None = None) -> list[ComputeRecord]:
        q = (
            select(
                tt.compute_resources.c.id,
                tt.compute_resources.c.name,
                tt.sites.c.name.label("site"),
                tt.compute_resources.c.backend,
                tt.compute_resources.c.config,
            )
            .join(tt.sites, tt.sites.c.id == tt.compute_resources.c.site_id)
            .order_by(tt.compute_resources.c.name)
        )
        if site:
            q = q.where(tt.sites.c.name == site)
        with self._c._read() as conn:
            rows = conn.execute(q).all()
            extra = conn.execute(
                select(tt.compute_volumes.c.compute_id, tt.volumes.c.name).join(
                    tt.volumes, tt.volumes.c.id == tt.compute_volumes.c.volume_id
                )
            ).all()
        mounts: dict[int, list[str]] = {}
        for cid, vname in extra:
            mounts.setdefault(cid, []).append(vname)
        return [
            ComputeRecord(
                r.id,
                r.name,
                r.site,
                r.backend,
                json.loads(r.config),
                tuple(sorted(mounts.get(r.id, []))),
            )
            for r in rows
        ]


class TopologyStore(Protocol):
    """What the cache layer and the CLI ask of the topology: :class:`Topology` in the
    catalog database, or :class:`lakecache.client.topology.RemoteTopology` through a
    server (which takes ``now`` from its own clock and ignores the caller's)."""

    def add_site(self, name: str, description: str, now: datetime) -> SiteRecord: ...
    def list_sites(self) -> list[SiteRecord]: ...
    def get_site(self, name: str) -> SiteRecord: ...
    def add_volume(
        self, name: str, site: str, root: str, capacity: int, ttl_seconds: int, now: datetime
    ) -> VolumeRecord: ...
    def list_volumes(self, site: str | None = None) -> list[VolumeRecord]: ...
    def get_volume(self, name: str) -> VolumeRecord: ...
    def remove_volume(self, name: str) -> None: ...
    def update_volume(
        self, name: str, *, capacity: int | None = None, ttl_seconds: int | None = None
    ) -> VolumeRecord: ...
    def report_volume_space(self, name: str, *, free: int, total: int, now: datetime) -> None: ...
    def add_compute(
        self,
        name: str,
        site: str,
        backend: str,
        config: dict[str, Any],
        volumes: list[str],
        now: datetime,
    ) -> ComputeRecord: ...
    def list_compute(self, site: str | None = None) -> list[ComputeRecord]: ...
    def request_cache(
        self,
        dataset: str,
        commit_id: str,
        volume: str,
        subpath: str,
        *,
        files: int,
        nbytes: int,
        now: datetime,
    ) -> tuple[CacheRecord, bool]: ...
    def find_cache(
        self,
        dataset: str,
        commit_id: str,
        volume: str,
        subpath: str = "",
        *,
        now: datetime | None = None,
    ) -> CacheRecord: ...
    def get_cache(self, cache_id: int, now: datetime | None = None) -> CacheRecord: ...
    def list_caches(
        self,
        *,
        volume: str | None = None,
        site: str | None = None,
        dataset: str | None = None,
        states: tuple[str, ...] | None = None,
        now: datetime | None = None,
    ) -> list[CacheRecord]: ...
    def claim_fill(
        self, cache_id: int, worker: str, *, now: datetime, stale_after: timedelta
    ) -> int | None: ...
    def beat_fill(self, cache_id: int, *, token: int, done_bytes: int, now: datetime) -> bool: ...
    def complete_fill(
        self, cache_id: int, *, token: int, linked_bytes: int, fetched_bytes: int, now: datetime
    ) -> bool: ...
    def fail_fill(self, cache_id: int, *, token: int, reason: str, now: datetime) -> bool: ...
    def start_eviction(
        self,
        cache_id: int,
        *,
        now: datetime,
        worker: str = "",
        stale_after: timedelta = EVICTION_STALE_AFTER,
    ) -> int | None: ...
    def finish_eviction(self, cache_id: int, *, token: int, now: datetime) -> bool: ...
    def holds_claim(self, cache_id: int, token: int) -> bool: ...
    def set_pinned(self, cache_id: int, pinned: bool, *, now: datetime) -> None: ...
    def set_report(self, cache_id: int, report: str) -> None: ...
    def ask(self, cache_id: int, request: str) -> None: ...
    def take_request(self, cache_id: int, request: str) -> bool: ...
    def add_lease(
        self, cache_id: int, holder: str, *, now: datetime, expires_at: datetime
    ) -> int: ...
    def renew_lease(self, lease_id: int, *, now: datetime, expires_at: datetime) -> None: ...
    def release_lease(self, lease_id: int, *, now: datetime) -> None: ...
