"""Caches and their leases in the catalog: the rows fillers, evictors and runs race on.

:class:`CacheRows` is the half of :class:`~lakecache.catalog.topology.Topology`
that keeps caches and leases (sites, volumes and compute stay there); it is
reached as ``catalog.topology`` like the rest. Every method that depends on
time takes ``now`` from the caller, so tests drive a clock of their own.

Concurrency contract:

- **Claims are fenced.** Claiming a cache row for a fill (``pending``, or
  ``filling`` with a stale heartbeat) or for an eviction (``ready``/``failed``,
  or ``evicting`` left stale by a worker that died or stalled) raises the
  row's ``fence_token`` by one and hands the new value to the claimant. Every
  later step of that claim (heartbeat, publish, failure, end of eviction)
  presents it and is a compare-and-set on (state, token): a worker that was
  paused past the stale time and taken over gets :class:`TakenOverError` and
  must stop. The counter never goes down, so a token of an earlier life of the
  cache (filled, evicted, asked for again) never matches either.
- **Leases and evictions are serialised on the cache row.** Taking a lease,
  renewing or releasing one, and starting an eviction each lock the cache row
  first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
  serialises every writer anyway), always the cache row before its leases, so
  the two never cross: a cache with a live lease is never evicted, and a lease
  taken is never deleted by an eviction that had already counted none.
- **A lost lease is reported.** An eviction deletes the lapsed leases of the
  cache it takes; renewing or releasing such a lease raises
  :class:`LeaseLostError` to its holder instead of doing nothing.
- Requesting a cache is idempotent per (volume, commit, sub-path): the row is
  reused, never duplicated.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, bindparam, delete, func, select, update
from sqlalchemy.engine import Connection

from lakecache.catalog import tables as t
from lakecache.catalog import topology_tables as tt
from lakecache.errors import LeaseLostError, NotFoundError, TakenOverError, UserError

if TYPE_CHECKING:
    from lakecache.catalog.db import Catalog
    from lakecache.catalog.topology import VolumeRecord

#: What can be asked of a site's agent for one cache.
REQUESTS = ("evict", "verify", "repair")

#: An eviction not finished after this long is taken over by the next gc or agent
#: pass (its worker was killed or stalled: a live one takes well under a second to
#: move the files aside and mark the cache evicted).
EVICTION_STALE_AFTER = timedelta(seconds=15)


def _at(now: datetime | None) -> dict[str, datetime]:
    """The parameters of :func:`_cache_select` (``now`` only when leases are counted live)."""
    return {} if now is None else {"now": now}


@functools.cache
def _cache_select(with_now: bool) -> Select[Any]:
    """Caches with their dataset, volume, site and live leases (those not expired at the
    ``now`` parameter when ``with_now``). Built once: building it cost more CPU than
    running it."""
    cond = [tt.leases.c.cache_id == tt.caches.c.id]
    if with_now:
        cond.append(tt.leases.c.expires_at > bindparam("now", type_=tt.leases.c.expires_at.type))
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


@functools.cache
def _cache_list_select(with_now: bool) -> Select[Any]:
    return _cache_select(with_now).order_by(tt.sites.c.name, tt.volumes.c.name, tt.caches.c.id)


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
    #: Raised by every claim of the row; the current claimant's token.
    fence_token: int = 0

    @property
    def name(self) -> str:
        sub = f":{self.subpath}" if self.subpath else ""
        return f"{self.dataset}@{self.commit_id[:12]}{sub}"

    @property
    def occupied(self) -> int:
        """Bytes this cache takes on its volume (hard-linked bytes are shared, not counted)."""
        return max(self.bytes - self.linked_bytes, 0)


def _lease_lost(lease_id: int) -> LeaseLostError:
    return LeaseLostError(
        f"lease {lease_id} is gone: it lapsed (not renewed in time) and its cache was "
        "evicted, or it was released already"
    )


class CacheRows:
    """Caches and leases; mixed into :class:`~lakecache.catalog.topology.Topology`."""

    _c: Catalog

    def get_volume(self, name: str) -> VolumeRecord:  # provided by Topology
        raise NotImplementedError

    # -- reading -----------------------------------------------------------------------

    def _cache_query(self, now: datetime | None = None) -> Any:
        return _cache_select(now is not None)

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
            fence_token=int(r.fence_token),
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
                # The fence token stays: it only ever goes up.
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
            row = conn.execute(q, _at(now)).one_or_none()
        if row is None:
            raise NotFoundError(
                f"no cache of {dataset}@{commit_id[:12]} on volume {volume!r}",
                hint="List caches with `lakecache cache ls`.",
            )
        return self._record(row)

    def get_cache(self, cache_id: int, now: datetime | None = None) -> CacheRecord:
        with self._c._read() as conn:
            row = conn.execute(
                self._cache_query(now).where(tt.caches.c.id == cache_id), _at(now)
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
        q = _cache_list_select(now is not None)
        if volume:
            q = q.where(tt.volumes.c.name == volume)
        if site:
            q = q.where(tt.sites.c.name == site)
        if dataset:
            q = q.where(t.datasets.c.name == dataset)
        if states:
            q = q.where(tt.caches.c.state.in_(states))
        with self._c._read() as conn:
            return [self._record(r) for r in conn.execute(q, _at(now)).all()]

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

    # -- claims and fenced steps ---------------------------------------------------------

    @staticmethod
    def _lock_cache(conn: Connection, cache_id: int) -> Any:
        """The cache row, locked until the transaction ends (None if there is none)."""
        return conn.execute(
            select(
                tt.caches.c.state,
                tt.caches.c.pinned,
                tt.caches.c.heartbeat_at,
                tt.caches.c.updated_at,
                tt.caches.c.fence_token,
                tt.caches.c.request,
            )
            .where(tt.caches.c.id == cache_id)
            .with_for_update()
        ).one_or_none()

    def claim_fill(
        self, cache_id: int, worker: str, *, now: datetime, stale_after: timedelta
    ) -> int | None:
        """Take the fill of a pending cache (or of one whose filler stopped heart-beating).

        Returns the claim's fence token, or None when someone else has the fill.
        Taking over a stale fill makes the old filler's token stale: its next
        step raises :class:`TakenOverError` and it stops.
        """
        with self._c._write() as conn:
            row = self._lock_cache(conn, cache_id)
            if row is None:
                return None
            stale = row.state == "filling" and (
                row.heartbeat_at is None or row.heartbeat_at < now - stale_after
            )
            if row.state != "pending" and not stale:
                return None
            token = int(row.fence_token) + 1
            conn.execute(
                update(tt.caches)
                .where(tt.caches.c.id == cache_id)
                .values(
                    state="filling",
                    worker=worker,
                    heartbeat_at=now,
                    updated_at=now,
                    error=None,
                    fence_token=token,
                )
            )
            return token

    def _fenced(
        self, cache_id: int, token: int, expect_state: str, what: str, **values: Any
    ) -> bool:
        """Change the row if it is in ``expect_state`` under ``token``.

        Raises TakenOverError when a newer claim holds the row; False when the
        token is current but the row is not in that state.
        """
        with self._c._write() as conn:
            res = conn.execute(
                update(tt.caches)
                .where(
                    tt.caches.c.id == cache_id,
                    tt.caches.c.state == expect_state,
                    tt.caches.c.fence_token == token,
                )
                .values(**values)
            )
            if res.rowcount == 1:
                return True
            current = conn.scalar(select(tt.caches.c.fence_token).where(tt.caches.c.id == cache_id))
        if current is None:
            raise NotFoundError(f"no cache with id {cache_id}", hint="It was removed.")
        if int(current) != token:
            raise TakenOverError(
                f"cannot {what} cache {cache_id}: its claim (token {token}) was taken over "
                f"by a newer worker (token {int(current)})"
            )
        return False

    def beat_fill(self, cache_id: int, *, token: int, done_bytes: int, now: datetime) -> bool:
        """A filler is alive and has written ``done_bytes``; TakenOverError if taken over."""
        return self._fenced(
            cache_id, token, "filling", "heart-beat", heartbeat_at=now, done_bytes=done_bytes
        )

    def complete_fill(
        self, cache_id: int, *, token: int, linked_bytes: int, fetched_bytes: int, now: datetime
    ) -> bool:
        """filling -> ready: the cache is published on its volume (fenced by ``token``)."""
        return self._fenced(
            cache_id,
            token,
            "filling",
            "publish",
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

    def fail_fill(self, cache_id: int, *, token: int, reason: str, now: datetime) -> bool:
        """filling -> failed, with the reason users see in `cache ls` (fenced by ``token``)."""
        return self._fenced(
            cache_id,
            token,
            "filling",
            "fail the fill of",
            state="failed",
            error=reason,
            worker=None,
            updated_at=now,
            done_bytes=0,
        )

    def start_eviction(
        self,
        cache_id: int,
        *,
        now: datetime,
        worker: str = "",
        stale_after: timedelta = EVICTION_STALE_AFTER,
    ) -> int | None:
        """Claim the eviction of a cache; returns its fence token, or None if it stays.

        ready/failed -> evicting, unless a live lease or a pin holds it; or take
        over an eviction left ``evicting`` for longer than ``stale_after`` (its
        worker was killed or stalled). Serialised with leasing on the cache row:
        a lease taken at the same moment either lands first (and the cache
        stays) or is refused. Lapsed leases are deleted; their holders learn it
        with :class:`LeaseLostError` when they next renew or release.
        """
        with self._c._write() as conn:
            row = self._lock_cache(conn, cache_id)
            if row is None:
                return None
            if row.state == "evicting":
                if row.updated_at >= now - stale_after:
                    return None  # a live evictor is on it
            elif row.state not in ("ready", "failed") or row.pinned:
                return None
            else:
                live = conn.scalar(
                    select(func.count()).where(
                        tt.leases.c.cache_id == cache_id, tt.leases.c.expires_at > now
                    )
                )
                if live:
                    return None
            token = int(row.fence_token) + 1
            values: dict[str, object] = {
                "state": "evicting",
                "updated_at": now,
                "worker": worker or None,
                "fence_token": token,
            }
            if row.request == "evict":
                # Consumed in the same step as the state moves: a reader never sees the
                # request gone while the cache still looks ready.
                values["request"] = None
            conn.execute(update(tt.caches).where(tt.caches.c.id == cache_id).values(**values))
            conn.execute(delete(tt.leases).where(tt.leases.c.cache_id == cache_id))
            return token

    def finish_eviction(self, cache_id: int, *, token: int, now: datetime) -> bool:
        """evicting -> evicted: the files are gone from the volume (fenced by ``token``)."""
        return self._fenced(
            cache_id,
            token,
            "evicting",
            "finish the eviction of",
            state="evicted",
            updated_at=now,
            done_bytes=0,
            linked_bytes=0,
            worker=None,
        )

    def holds_claim(self, cache_id: int, token: int) -> bool:
        """True while ``token`` is the cache's current claim (a check before touching files)."""
        with self._c._read() as conn:
            current = conn.scalar(select(tt.caches.c.fence_token).where(tt.caches.c.id == cache_id))
        return current is not None and int(current) == token

    # -- plain changes ---------------------------------------------------------------------

    def update_cache(
        self, cache_id: int, *, expect_state: str | None = None, **values: Any
    ) -> bool:
        """Change columns of a cache row; with ``expect_state``, only if it is in that state."""
        q = update(tt.caches).where(tt.caches.c.id == cache_id)
        if expect_state is not None:
            q = q.where(tt.caches.c.state == expect_state)
        with self._c._write() as conn:
            return bool(conn.execute(q.values(**values)).rowcount == 1)

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
        """Hold a ready cache: refused (UserError) unless it is ready.

        Locks the cache row first, so an eviction starting at the same moment
        either sees this lease or has already made the cache ``evicting``.
        """
        with self._c._write() as conn:
            row = self._lock_cache(conn, cache_id)
            state = None if row is None else row.state
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

    def _locked_lease_cache(self, conn: Connection, lease_id: int) -> int:
        """Lock the cache of a lease (cache row first, as eviction does); LeaseLostError if gone."""
        cache_id = conn.scalar(select(tt.leases.c.cache_id).where(tt.leases.c.id == lease_id))
        if cache_id is None:
            raise _lease_lost(lease_id)
        self._lock_cache(conn, cache_id)
        # Read again under the lock: an eviction may have deleted it in between.
        if conn.scalar(select(tt.leases.c.id).where(tt.leases.c.id == lease_id)) is None:
            raise _lease_lost(lease_id)
        return int(cache_id)

    def renew_lease(self, lease_id: int, *, now: datetime, expires_at: datetime) -> None:
        """Keep holding; :class:`LeaseLostError` if the lease lapsed and its cache was evicted."""
        with self._c._write() as conn:
            cache_id = self._locked_lease_cache(conn, lease_id)
            conn.execute(
                update(tt.leases).where(tt.leases.c.id == lease_id).values(expires_at=expires_at)
            )
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
        """Stop holding; :class:`LeaseLostError` if it was lost to an eviction (or released)."""
        with self._c._write() as conn:
            cache_id = self._locked_lease_cache(conn, lease_id)
            conn.execute(delete(tt.leases).where(tt.leases.c.id == lease_id))
            conn.execute(
                update(tt.caches).where(tt.caches.c.id == cache_id).values(last_used_at=now)
            )
