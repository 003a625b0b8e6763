"""Sites, cache volumes, compute resources, caches and leases in the catalog.

Reached as ``catalog.topology``. Every method that depends on time takes
``now`` from the caller, so tests drive a clock of their own.

Concurrency: claiming a fill is a compare-and-set on the cache row
(``pending``, or ``filling`` with a stale heartbeat, to ``filling`` by me), so
of many processes asking for the same cache exactly one fills it and the
others wait for its state. Requesting a cache is idempotent per
(volume, commit, sub-path): the row is reused, never duplicated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy import exc as sa_exc

from lakecache.catalog import tables as t
from lakecache.catalog import topology_tables as tt
from lakecache.catalog.names import check_dataset_name
from lakecache.errors import AlreadyExistsError, NotFoundError, UserError

if TYPE_CHECKING:
    from lakecache.catalog.db import Catalog

DEFAULT_TTL = timedelta(days=1)
BACKENDS = ("local", "ray", "kubernetes")
#: What can be asked of a site's agent for one cache.
REQUESTS = ("evict", "verify", "repair")


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


@dataclass(frozen=True)
class CacheRecord:
    id: int
    dataset: str
    commit_id: str
    volume: str
    site: str
    subpath: str
    state: str
    files: int
    bytes: int
    done_bytes: int
    linked_bytes: int
    fetched_bytes: int
    error: str | None
    pinned: bool
    created_at: datetime
    updated_at: datetime
    ready_at: datetime | None
    last_used_at: datetime
    worker: str | None
    heartbeat_at: datetime | None
    request: str | None
    report: str | None
    leases: int = 0

    @property
    def name(self) -> str:
        sub = f":{self.subpath}" if self.subpath else ""
        return f"{self.dataset}@{self.commit_id[:12]}{sub}"

    @property
    def occupied(self) -> int:
        """Bytes this cache takes on its volume (hard-linked bytes are shared, not counted)."""
        return max(self.bytes - self.linked_bytes, 0)


_NAME_HINT = "Use 1 to 64 characters: lowercase letters, digits, '.', '_' or '-'."


def _check_name(kind: str, name: str) -> str:
    try:
        return check_dataset_name(name)
    except UserError:
        raise UserError(f"invalid {kind} name {name!r}", hint=_NAME_HINT) from None


class Topology:
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

    def _volume_query(self) -> Any:
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

    def list_volumes(self, site: str | None = None) -> list[VolumeRecord]:
        q = self._volume_query().order_by(tt.sites.c.name, tt.volumes.c.name)
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

    # -- caches ------------------------------------------------------------------------

    def _cache_query(self, now: datetime | None = None) -> Any:
        cond = [tt.leases.c.cache_id == tt.caches.c.id]
        if now is not None:
            cond.append(tt.leases.c.expires_at > now)
        live = select(func.count()).where(*cond).correlate(tt.caches).scalar_subquery()
        return (
            select(
                tt.caches,
                t.datasets.c.name.label("dataset"),
                tt.volumes.c.name.label("volume"),
                tt.sites.c.name.label("site"),
                live.label("live_leases"),
            )
            .join(t.datasets, t.datasets.c.id == tt.caches.c.dataset_id)
            .join(tt.volumes, tt.volumes.c.id == tt.caches.c.volume_id)
            .join(tt.sites, tt.sites.c.id == tt.volumes.c.site_id)
        )

    @staticmethod
    def _record(r: Any) -> CacheRecord:
        return CacheRecord(
            id=r.id,
            dataset=r.dataset,
            commit_id=r.commit_id,
            volume=r.volume,
            site=r.site,
            subpath=r.subpath,
            state=r.state,
            files=r.files,
            bytes=r.bytes,
            done_bytes=r.done_bytes,
            linked_bytes=r.linked_bytes,
            fetched_bytes=r.fetched_bytes,
            error=r.error,
            pinned=bool(r.pinned),
            created_at=r.created_at,
            updated_at=r.updated_at,
            ready_at=r.ready_at,
            last_used_at=r.last_used_at,
            worker=r.worker,
            heartbeat_at=r.heartbeat_at,
            request=r.request,
            report=r.report,
            leases=int(r.live_leases or 0),
        )

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
    ) -> tuple[CacheRecord, bool]:
        """Ask for a cache; returns (record, created). Evicted or failed caches are re-armed."""
        v = self.get_volume(volume)
        with self._c._write() as conn:
            dataset_id = self._c._dataset_id(conn, dataset)
            # Insert-or-nothing, so concurrent requests (on PostgreSQL, truly at once)
            # end with one row and no unique-key error.
            res = conn.execute(
                self._c._insert_ignore(tt.caches).values(
                    dataset_id=dataset_id,
                    commit_id=commit_id,
                    volume_id=v.id,
                    subpath=subpath,
                    state="pending",
                    files=files,
                    bytes=nbytes,
                    done_bytes=0,
                    linked_bytes=0,
                    fetched_bytes=0,
                    pinned=False,
                    created_at=now,
                    updated_at=now,
                    last_used_at=now,
                )
            )
            created = res.rowcount == 1
            if not created:
                # An evicted or failed cache is armed again, once, whoever asks first.
                res = conn.execute(
                    update(tt.caches)
                    .where(
                        tt.caches.c.volume_id == v.id,
                        tt.caches.c.commit_id == commit_id,
                        tt.caches.c.subpath == subpath,
                        tt.caches.c.state.in_(("evicted", "failed")),
                    )
                    .values(
                        state="pending",
                        error=None,
                        done_bytes=0,
                        linked_bytes=0,
                        fetched_bytes=0,
                        worker=None,
                        heartbeat_at=None,
                        updated_at=now,
                        last_used_at=now,
                        ready_at=None,
                        files=files,
                        bytes=nbytes,
                    )
                )
                created = res.rowcount == 1
        return self.find_cache(dataset, commit_id, volume, subpath, now=now), created

    def find_cache(
        self,
        dataset: str,
        commit_id: str,
        volume: str,
        subpath: str = "",
        *,
        now: datetime | None = None,
    ) -> CacheRecord:
        q = self._cache_query(now).where(
            t.datasets.c.name == dataset,
            tt.caches.c.commit_id == commit_id,
            tt.volumes.c.name == volume,
            tt.caches.c.subpath == subpath,
        )
        with self._c._read() as conn:
            row = conn.execute(q).one_or_none()
        if row is None:
            raise NotFoundError(
                f"no cache of {dataset}@{commit_id[:12]} on volume {volume!r}",
                hint="List caches with `lakecache cache ls`.",
            )
        return self._record(row)

    def get_cache(self, cache_id: int, now: datetime | None = None) -> CacheRecord:
        with self._c._read() as conn:
            row = conn.execute(
                self._cache_query(now).where(tt.caches.c.id == cache_id)
            ).one_or_none()
        if row is None:
            raise NotFoundError(
                f"no cache with id {cache_id}", hint="List caches with `lakecache cache ls`."
            )
        return self._record(row)

    def list_caches(
        self,
        *,
        volume: str | None = None,
        site: str | None = None,
        dataset: str | None = None,
        states: tuple[str, ...] | None = None,
        now: datetime | None = None,
    ) -> list[CacheRecord]:
        q = self._cache_query(now).order_by(tt.sites.c.name, tt.volumes.c.name, tt.caches.c.id)
        if volume:
            q = q.where(tt.volumes.c.name == volume)
        if site:
            q = q.where(tt.sites.c.name == site)
        if dataset:
            q = q.where(t.datasets.c.name == dataset)
        if states:
            q = q.where(tt.caches.c.state.in_(states))
        with self._c._read() as conn:
            return [self._record(r) for r in conn.execute(q).all()]

    def datasets_cached_at(self, site: str) -> set[str]:
        """Names of the datasets with a cache on a volume of ``site`` (evicted ones aside)."""
        q = (
            select(t.datasets.c.name)
            .distinct()
            .join(tt.caches, tt.caches.c.dataset_id == t.datasets.c.id)
            .join(tt.volumes, tt.volumes.c.id == tt.caches.c.volume_id)
            .join(tt.sites, tt.sites.c.id == tt.volumes.c.site_id)
            .where(tt.sites.c.name == site, tt.caches.c.state != "evicted")
        )
        with self._c._read() as conn:
            return {r[0] for r in conn.execute(q)}

    def claim_fill(
        self, cache_id: int, worker: str, *, now: datetime, stale_after: timedelta
    ) -> bool:
        """Take the fill of a pending cache (or of one whose filler stopped heart-beating)."""
        with self._c._write() as conn:
            res = conn.execute(
                update(tt.caches)
                .where(
                    tt.caches.c.id == cache_id,
                    or_(
                        tt.caches.c.state == "pending",
                        and_(
                            tt.caches.c.state == "filling",
                            tt.caches.c.heartbeat_at < now - stale_after,
                        ),
                    ),
                )
                .values(
                    state="filling", worker=worker, heartbeat_at=now, updated_at=now, error=None
                )
            )
            return bool(res.rowcount == 1)

    def update_cache(
        self, cache_id: int, *, expect_state: str | None = None, **values: Any
    ) -> bool:
        """Change columns of a cache row; with ``expect_state``, only if it is in that state."""
        q = update(tt.caches).where(tt.caches.c.id == cache_id)
        if expect_state is not None:
            q = q.where(tt.caches.c.state == expect_state)
        with self._c._write() as conn:
            return bool(conn.execute(q.values(**values)).rowcount == 1)

    # -- what fillers, evictors and users report -----------------------------------------
    # Named transitions rather than raw column writes, so that the same verbs can
    # be offered over HTTP (client.topology.RemoteTopology) and checked there.

    def beat_fill(self, cache_id: int, *, done_bytes: int, now: datetime) -> bool:
        """A filler is alive and has written ``done_bytes``; False if the cache left filling."""
        return self.update_cache(
            cache_id, expect_state="filling", heartbeat_at=now, done_bytes=done_bytes
        )

    def complete_fill(
        self, cache_id: int, *, linked_bytes: int, fetched_bytes: int, now: datetime
    ) -> bool:
        """filling -> ready: the cache is published on its volume."""
        with self._c._write() as conn:
            res = conn.execute(
                update(tt.caches)
                .where(tt.caches.c.id == cache_id, tt.caches.c.state == "filling")
                .values(
                    state="ready",
                    ready_at=now,
                    last_used_at=now,
                    updated_at=now,
                    done_bytes=tt.caches.c.bytes,
                    linked_bytes=linked_bytes,
                    fetched_bytes=fetched_bytes,
                    worker=None,
                    error=None,
                )
            )
            return bool(res.rowcount == 1)

    def fail_fill(self, cache_id: int, *, reason: str, now: datetime) -> bool:
        """filling -> failed, with the reason users see in `cache ls`."""
        return self.update_cache(
            cache_id,
            expect_state="filling",
            state="failed",
            error=reason,
            worker=None,
            updated_at=now,
            done_bytes=0,
        )

    def finish_eviction(self, cache_id: int, *, now: datetime) -> bool:
        """evicting -> evicted: the files are gone from the volume."""
        return self.update_cache(
            cache_id,
            expect_state="evicting",
            state="evicted",
            updated_at=now,
            done_bytes=0,
            linked_bytes=0,
        )

    def set_pinned(self, cache_id: int, pinned: bool, *, now: datetime) -> None:
        self.get_cache(cache_id)
        self.update_cache(cache_id, pinned=pinned, updated_at=now)

    def set_report(self, cache_id: int, report: str) -> None:
        """The outcome of the last verify, shown with the cache."""
        self.update_cache(cache_id, report=report)

    def ask(self, cache_id: int, request: str) -> None:
        """Leave work for the site's agent on a cache: ``evict``, ``verify`` or ``repair``."""
        if request not in REQUESTS:
            raise UserError(f"unknown cache request {request!r}", hint=f"One of {REQUESTS}.")
        self.get_cache(cache_id)
        self.update_cache(cache_id, request=request)

    def take_request(self, cache_id: int, request: str) -> bool:
        """Consume a request left on a cache; of several agents exactly one gets it."""
        q = update(tt.caches).where(tt.caches.c.id == cache_id, tt.caches.c.request == request)
        with self._c._write() as conn:
            return bool(conn.execute(q.values(request=None)).rowcount == 1)

    # -- leases ------------------------------------------------------------------------

    def add_lease(self, cache_id: int, holder: str, *, now: datetime, expires_at: datetime) -> int:
        """Hold a ready cache: refused unless it is ready (so eviction and leasing never cross)."""
        with self._c._write() as conn:
            state = conn.scalar(select(tt.caches.c.state).where(tt.caches.c.id == cache_id))
            if state != "ready":
                raise UserError(
                    f"cache {cache_id} is {state or 'gone'}, not ready",
                    hint="Ask for it again with `lakecache cache add`.",
                )
            res = conn.execute(
                tt.leases.insert().values(
                    cache_id=cache_id, holder=holder, created_at=now, expires_at=expires_at
                )
            )
            conn.execute(
                update(tt.caches).where(tt.caches.c.id == cache_id).values(last_used_at=now)
            )
            (lid,) = res.inserted_primary_key or (0,)
        return int(lid)

    def renew_lease(self, lease_id: int, *, now: datetime, expires_at: datetime) -> None:
        with self._c._write() as conn:
            cache_id = conn.scalar(select(tt.leases.c.cache_id).where(tt.leases.c.id == lease_id))
            conn.execute(
                update(tt.leases).where(tt.leases.c.id == lease_id).values(expires_at=expires_at)
            )
            if cache_id is not None:
                conn.execute(
                    update(tt.caches).where(tt.caches.c.id == cache_id).values(last_used_at=now)
                )

    def lease_holder(self, lease_id: int) -> tuple[int, str]:
        """(cache id, holder) of a live or lapsed lease; NotFoundError once released."""
        with self._c._read() as conn:
            row = conn.execute(
                select(tt.leases.c.cache_id, tt.leases.c.holder).where(tt.leases.c.id == lease_id)
            ).one_or_none()
        if row is None:
            raise NotFoundError(f"no lease with id {lease_id}", hint="It was released or lapsed.")
        return int(row.cache_id), str(row.holder)

    def release_lease(self, lease_id: int, *, now: datetime) -> None:
        with self._c._write() as conn:
            cache_id = conn.scalar(select(tt.leases.c.cache_id).where(tt.leases.c.id == lease_id))
            conn.execute(delete(tt.leases).where(tt.leases.c.id == lease_id))
            if cache_id is not None:
                conn.execute(
                    update(tt.caches).where(tt.caches.c.id == cache_id).values(last_used_at=now)
                )

    def start_eviction(self, cache_id: int, *, now: datetime) -> bool:
        """ready/failed -> evicting, atomically, unless a live lease or a pin holds it."""
        with self._c._write() as conn:
            live = conn.scalar(
                select(func.count()).where(
                    tt.leases.c.cache_id == cache_id, tt.leases.c.expires_at > now
                )
            )
            if live:
                return False
            res = conn.execute(
                update(tt.caches)
                .where(
                    tt.caches.c.id == cache_id,
                    tt.caches.c.state.in_(("ready", "failed")),
                    tt.caches.c.pinned.is_(False),
                )
                .values(state="evicting", updated_at=now)
            )
            conn.execute(delete(tt.leases).where(tt.leases.c.cache_id == cache_id))
            return bool(res.rowcount == 1)


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
    ) -> bool: ...
    def beat_fill(self, cache_id: int, *, done_bytes: int, now: datetime) -> bool: ...
    def complete_fill(
        self, cache_id: int, *, linked_bytes: int, fetched_bytes: int, now: datetime
    ) -> bool: ...
    def fail_fill(self, cache_id: int, *, reason: str, now: datetime) -> bool: ...
    def start_eviction(self, cache_id: int, *, now: datetime) -> bool: ...
    def finish_eviction(self, cache_id: int, *, now: datetime) -> bool: ...
    def set_pinned(self, cache_id: int, pinned: bool, *, now: datetime) -> None: ...
    def set_report(self, cache_id: int, report: str) -> None: ...
    def ask(self, cache_id: int, request: str) -> None: ...
    def take_request(self, cache_id: int, request: str) -> bool: ...
    def add_lease(
        self, cache_id: int, holder: str, *, now: datetime, expires_at: datetime
    ) -> int: ...
    def renew_lease(self, lease_id: int, *, now: datetime, expires_at: datetime) -> None: ...
    def release_lease(self, lease_id: int, *, now: datetime) -> None: ...
