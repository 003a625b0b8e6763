"""Sites, volumes, compute and caches, as a lakecache server serves them.

:class:`RemoteTopology` answers what :class:`~lakecache.catalog.topology.TopologyStore`
asks, with the catalog's records and errors, through the REST API
(``/sites``, ``/volumes``, ``/compute``, ``/caches``, ``/leases``). So the cache
layer runs unchanged on a machine that works through a server: it fills a
cache on a volume this machine mounts, holds leases for ``lakecache.use()``
and runs a site agent, while the server keeps the one catalog.

Times: the server stamps every change with its own clock, so the ``now``
arguments of the protocol are ignored here. Fencing: the token a claim returns
travels in every later step; the server's 409 for a stale one is raised as
:class:`~lakecache.errors.TakenOverError` (stop), and a lease the server no
longer has as :class:`~lakecache.errors.LeaseLostError`. Record ids the API does not
expose (sites, volumes, compute) are 0; nothing in the cache layer uses them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from lakecache.client.connection import ServerConnection, path_part
from lakecache.errors import (
    ConflictError,
    LeaseLostError,
    NotFoundError,
    TakenOverError,
    UserError,
)

if TYPE_CHECKING:
    from lakecache.catalog.topology import (
        CacheRecord,
        ComputeRecord,
        SiteRecord,
        VolumeRecord,
    )

log = logging.getLogger("lakecache.client")

#: Every cache state, to list evicted caches too (the API hides them by default).
ALL_STATES = ("pending", "filling", "ready", "evicting", "evicted", "failed")


@dataclass(frozen=True)
class VolumeFigures:
    committed: int
    caches: int
    linked_saved: int
    #: As the server sees it: None where the server does not mount the volume.
    free_fs: int | None


class RemoteTopology:
    """The server's topology and caches, as the logged-in user sees them. Thread-safe."""

    def __init__(self, conn: ServerConnection) -> None:
        self._conn = conn
        self._volumes: dict[str, VolumeRecord] = {}
        self._denied: set[int] = set()

    def __repr__(self) -> str:
        return f"RemoteTopology({self._conn.url!r})"

    # -- sites, volumes, compute ---------------------------------------------------------------

    def add_site(self, name: str, description: str, now: datetime | None = None) -> SiteRecord:
        out = self._conn.call("POST", "/sites", json={"name": name, "description": description})
        return _site(out)

    def list_sites(self) -> list[SiteRecord]:
        return [_site(s) for s in self._conn.pages("/sites")]

    def get_site(self, name: str) -> SiteRecord:
        return _site(self._conn.call("GET", f"/sites/{path_part(name)}"))

    def add_volume(
        self,
        name: str,
        site: str,
        root: str,
        capacity: int,
        ttl_seconds: int,
        now: datetime | None = None,
    ) -> VolumeRecord:
        body = {
            "name": name,
            "site": site,
            "root": root,
            "capacity": capacity,
            "ttl_seconds": ttl_seconds,
        }
        return self._volume(self._conn.call("POST", "/volumes", json=body))

    def list_volumes(self, site: str | None = None) -> list[VolumeRecord]:
        params = {"site": site} if site else {}
        return [self._volume(v) for v in self._conn.pages("/volumes", **params)]

    def get_volume(self, name: str) -> VolumeRecord:
        # A volume's place and quota rarely change; a fill asks for it often.
        cached = self._volumes.get(name)
        if cached is not None:
            return cached
        return self._volume(self._conn.call("GET", f"/volumes/{path_part(name)}"))

    def volume_figures(self, name: str) -> VolumeFigures:
        """The server's count of what the volume holds (caches of every dataset)."""
        d = self._conn.call("GET", f"/volumes/{path_part(name)}")
        self._volume(d)
        return VolumeFigures(d["committed"], d["caches"], d["linked_saved"], d["free_fs"])

    def report_volume_space(
        self, name: str, *, free: int, total: int, now: datetime | None = None
    ) -> None:
        body = {"free_bytes": free, "total_bytes": total}
        self._conn.call("PUT", f"/volumes/{path_part(name)}/space", json=body)

    def update_volume(
        self, name: str, *, capacity: int | None = None, ttl_seconds: int | None = None
    ) -> VolumeRecord:
        body = {
            k: v for k, v in (("capacity", capacity), ("ttl_seconds", ttl_seconds)) if v is not None
        }
        self._volumes.pop(name, None)
        return self._volume(self._conn.call("PATCH", f"/volumes/{path_part(name)}", json=body))

    def remove_volume(self, name: str) -> None:
        self._conn.call("DELETE", f"/volumes/{path_part(name)}")
        self._volumes.pop(name, None)

    def _volume(self, d: dict[str, Any]) -> VolumeRecord:
        from lakecache.catalog.topology import VolumeRecord

        v = VolumeRecord(0, d["name"], d["site"], d["root"], d["capacity"], d["ttl_seconds"])
        self._volumes[v.name] = v
        return v

    def add_compute(
        self,
        name: str,
        site: str,
        backend: str,
        config: dict[str, Any],
        volumes: list[str],
        now: datetime | None = None,
    ) -> ComputeRecord:
        if config:
            raise UserError(
                "backend settings (--config) are kept in the server's config file, not sent "
                "over the API",
                hint="Add the resource without --config and put its settings under "
                "[[sites.compute]] in the server's config, or run this where the catalog is.",
            )
        body = {"name": name, "site": site, "backend": backend, "volumes": volumes}
        return _compute(self._conn.call("POST", "/compute", json=body))

    def list_compute(self, site: str | None = None) -> list[ComputeRecord]:
        params = {"site": site} if site else {}
        return [_compute(c) for c in self._conn.pages("/compute", **params)]

    # -- caches ----------------------------------------------------------------------------------

    def request(
        self, dataset: str, ref: str | None, *, site: str | None, volume: str | None, path: str
    ) -> CacheRecord:
        """Ask the server for a cache (writers); it picks the volume and sizes the cache."""
        self._conn.touch(dataset)
        body = {"ref": ref or "latest", "site": site, "volume": volume, "path": path}
        return _cache(self._conn.call("POST", f"/datasets/{path_part(dataset)}/caches", json=body))

    def request_cache(
        self,
        dataset: str,
        commit_id: str,
        volume: str,
        subpath: str,
        *,
        files: int = 0,
        nbytes: int = 0,
        now: datetime | None = None,
    ) -> tuple[CacheRecord, bool]:
        """Ask again for a cache (re-arms an evicted or failed one); the server sizes it."""
        rec = self.request(dataset, commit_id, site=None, volume=volume, path=subpath)
        return rec, rec.state == "pending"

    def find_cache(
        self,
        dataset: str,
        commit_id: str,
        volume: str,
        subpath: str = "",
        *,
        now: datetime | None = None,
    ) -> CacheRecord:
        for c in self.list_caches(dataset=dataset, volume=volume):
            if c.commit_id == commit_id and c.subpath == subpath:
                return c
        raise NotFoundError(
            f"no cache of {dataset}@{commit_id[:12]} on volume {volume!r}",
            hint="List caches with `lakecache cache ls`.",
        )

    def get_cache(self, cache_id: int, now: datetime | None = None) -> CacheRecord:
        return _cache(self._conn.call("GET", f"/caches/{int(cache_id)}"))

    def list_caches(
        self,
        *,
        volume: str | None = None,
        site: str | None = None,
        dataset: str | None = None,
        states: tuple[str, ...] | None = None,
        now: datetime | None = None,
    ) -> list[CacheRecord]:
        """Caches of the datasets this user can read (every state unless ``states``)."""
        params: dict[str, Any] = {"state": list(states or ALL_STATES)}
        for key, value in (("volume", volume), ("site", site), ("dataset", dataset)):
            if value:
                params[key] = value
        return [_cache(c) for c in self._conn.pages("/caches", **params)]

    # -- what a filler, an evictor or a verifier reports -------------------------------------------

    def _call_step(
        self, cache_id: int, step: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = self._conn.call("POST", f"/caches/{int(cache_id)}/{step}", json=body)
        return out

    def _fenced_step(self, cache_id: int, step: str, body: dict[str, Any]) -> bool:
        """A step of a claim: any 409 means this worker no longer holds the cache."""
        try:
            return bool(self._call_step(cache_id, step, body)["done"])
        except TakenOverError:
            raise
        except ConflictError as exc:
            # e.g. "not being filled by you": another user's worker took it over.
            raise TakenOverError(exc.message) from None

    def claim_fill(
        self,
        cache_id: int,
        worker: str,
        *,
        now: datetime | None = None,
        stale_after: timedelta = timedelta(seconds=60),
    ) -> int | None:
        """Take the fill; its fence token, or None if someone else has it, or if this
        user may not fill it (a reader: the cache is then filled by a writer or the
        site's agent)."""
        from lakecache.client.errors import AccessDeniedError

        # The server takes over a fill only after 15 s without a heartbeat, at the least.
        stale = min(max(stale_after.total_seconds(), 15.0), 86400.0)
        body = {"worker": worker, "stale_after_seconds": stale}
        try:
            out = self._call_step(cache_id, "claim", body)
        except AccessDeniedError as exc:
            if exc.status != 403:
                raise
            if cache_id not in self._denied:
                self._denied.add(cache_id)
                log.warning("not filling cache %s here: %s", cache_id, exc.message)
            return None
        return int(out["token"]) if out["done"] else None

    def beat_fill(
        self, cache_id: int, *, token: int, done_bytes: int, now: datetime | None = None
    ) -> bool:
        return self._fenced_step(cache_id, "heartbeat", {"token": token, "done_bytes": done_bytes})

    def complete_fill(
        self,
        cache_id: int,
        *,
        token: int,
        linked_bytes: int,
        fetched_bytes: int,
        now: datetime | None = None,
    ) -> bool:
        body = {"token": token, "linked_bytes": linked_bytes, "fetched_bytes": fetched_bytes}
        return self._fenced_step(cache_id, "ready", body)

    def fail_fill(
        self, cache_id: int, *, token: int, reason: str, now: datetime | None = None
    ) -> bool:
        body = {"token": token, "reason": reason[:2000] or "failed"}
        return self._fenced_step(cache_id, "failed", body)

    def start_eviction(
        self,
        cache_id: int,
        *,
        now: datetime | None = None,
        worker: str = "",
        stale_after: timedelta | None = None,
    ) -> int | None:
        """Claim the eviction (the server's clock says when one is stale); its token or None."""
        out = self._call_step(cache_id, "eviction")
        return int(out["token"]) if out["done"] else None

    def finish_eviction(self, cache_id: int, *, token: int, now: datetime | None = None) -> bool:
        return self._fenced_step(cache_id, "evicted", {"token": token})

    def holds_claim(self, cache_id: int, token: int) -> bool:
        """Whether ``token`` is still the cache's claim (the server's record says)."""
        return self.get_cache(cache_id).fence_token == token

    def set_pinned(self, cache_id: int, pinned: bool, *, now: datetime | None = None) -> None:
        self._conn.call("PATCH", f"/caches/{int(cache_id)}", json={"pinned": pinned})

    def set_report(self, cache_id: int, report: str) -> None:
        self._conn.call("PUT", f"/caches/{int(cache_id)}/report", json={"report": report[:2000]})

    def ask(self, cache_id: int, request: str) -> None:
        self._conn.call("POST", f"/caches/{int(cache_id)}/requests", json={"request": request})

    def take_request(self, cache_id: int, request: str) -> bool:
        out = self._conn.call("DELETE", f"/caches/{int(cache_id)}/requests/{path_part(request)}")
        return bool(out["done"])

    # -- leases ------------------------------------------------------------------------------------

    def add_lease(
        self,
        cache_id: int,
        holder: str,
        *,
        now: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> int:
        """Hold a ready cache; UserError (as the catalog raises) if it is not ready."""
        from lakecache.errors import ConflictError

        body = {"holder": holder, "ttl_seconds": _ttl(now, expires_at)}
        try:
            out = self._conn.call("POST", f"/caches/{int(cache_id)}/leases", json=body)
        except ConflictError as exc:
            raise UserError(exc.message, hint=exc.hint) from None
        return int(out["id"])

    def renew_lease(
        self, lease_id: int, *, now: datetime | None = None, expires_at: datetime | None = None
    ) -> None:
        """Keep holding; LeaseLostError once the server no longer has the lease."""
        body = {"ttl_seconds": _ttl(now, expires_at)}
        try:
            self._conn.call("PUT", f"/leases/{int(lease_id)}", json=body)
        except NotFoundError:
            raise _lease_lost(lease_id) from None

    def release_lease(self, lease_id: int, *, now: datetime | None = None) -> None:
        """Stop holding; LeaseLostError if the server had already lost it to an eviction."""
        try:
            self._conn.call("DELETE", f"/leases/{int(lease_id)}")
        except NotFoundError:
            raise _lease_lost(lease_id) from None


def _lease_lost(lease_id: int) -> LeaseLostError:
    return LeaseLostError(
        f"lease {lease_id} is gone from the server: it lapsed (not renewed in time) and "
        "its cache was evicted, or it was released already"
    )


def _ttl(now: datetime | None, expires_at: datetime | None) -> float:
    """The caller's lease length, for the server to count from its own clock (1 s to 1 h)."""
    if now is None or expires_at is None:
        return 60.0
    return min(max((expires_at - now).total_seconds(), 1.0), 3600.0)


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def _site(d: dict[str, Any]) -> SiteRecord:
    from lakecache.catalog.topology import SiteRecord

    return SiteRecord(0, d["name"], d["description"])


def _compute(d: dict[str, Any]) -> ComputeRecord:
    from lakecache.catalog.topology import ComputeRecord

    return ComputeRecord(0, d["name"], d["site"], d["backend"], {}, tuple(d["volumes"]))


def _cache(d: dict[str, Any]) -> CacheRecord:
    from lakecache.catalog.topology import CacheRecord

    created = _time(d["created_at"])
    updated = _time(d["updated_at"])
    last_used = _time(d["last_used_at"])
    assert created is not None and updated is not None and last_used is not None
    return CacheRecord(
        id=int(d["id"]),
        dataset=d["dataset"],
        commit_id=d["commit"],
        volume=d["volume"],
        site=d["site"],
        subpath=d["subpath"],
        state=d["state"],
        files=int(d["files"]),
        bytes=int(d["bytes"]),
        done_bytes=int(d["done_bytes"]),
        linked_bytes=int(d["linked_bytes"]),
        fetched_bytes=int(d["fetched_bytes"]),
        error=d["error"],
        pinned=bool(d["pinned"]),
        created_at=created,
        updated_at=updated,
        ready_at=_time(d["ready_at"]),
        last_used_at=last_used,
        worker=d.get("worker"),
        heartbeat_at=_time(d.get("heartbeat_at")),
        request=d["request"],
        report=d.get("report"),
        leases=int(d["leases"]),
        fence_token=int(d.get("fence_token") or 0),
    )
