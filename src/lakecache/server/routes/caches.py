"""Caches: ask for one, watch it fill, pin it, evict it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from lakecache.cache.presence import no_agent_note, sites_with_agent
from lakecache.catalog.accounts import ROLE_RANK
from lakecache.catalog.topology import CacheRecord
from lakecache.errors import ConflictError, DatasetNotFoundError, NotFoundError
from lakecache.server.auth import Plane, Principal, User, require_dataset, visible_datasets
from lakecache.server.errors import (
    COMMON_RESPONSES,
    ErrorBody,
    PermissionDeniedError,
    Responses,
)
from lakecache.server.models import CacheIn, CacheOut, CachePatch, CacheState
from lakecache.server.pagination import Page, Paging, paginate
from lakecache.server.params import DatasetName
from lakecache.server.runtime import ControlPlane
from lakecache.server.views import cache_out

router = APIRouter(tags=["caches"], responses=COMMON_RESPONSES)

_CONFLICT: Responses = {409: {"model": ErrorBody, "description": "In use, pinned or busy"}}
CacheId = Annotated[int, Path(ge=1, le=2**62)]
StateFilter = Annotated[
    list[CacheState] | None,
    Query(description="Repeatable; default: every state but evicted", max_length=6),
]


def caches_out(plane: ControlPlane, caches: list[CacheRecord]) -> list[CacheOut]:
    volumes = plane.topology.list_volumes()
    ttl = {v.name: v.ttl_seconds for v in volumes}
    now = plane.clock.now()
    live = sites_with_agent(volumes, now, running_here=plane.agent_sites)
    return [
        cache_out(
            c,
            ttl.get(c.volume, 0),
            now,
            agent_note=no_agent_note(c.site)
            if c.state == "pending" and c.site not in live
            else None,
        )
        for c in caches
    ]


def visible_caches(
    plane: ControlPlane,
    principal: Principal,
    caches: list[CacheRecord],
    state: list[CacheState] | None,
) -> list[CacheRecord]:
    """Caches of datasets the caller can read; evicted ones only when asked for by state."""
    roles = visible_datasets(plane, principal)
    site = principal.user.agent_site
    return [
        c
        for c in caches
        if (roles is None or c.dataset in roles)
        and (site is None or c.site == site)
        and (c.state in state if state else c.state != "evicted")
    ]


def cache_or_404(
    plane: ControlPlane, principal: Principal, cache_id: int, need: str
) -> CacheRecord:
    """A cache the caller may see; the same 404 for a missing one and one of a hidden dataset."""
    try:
        rec = plane.topology.get_cache(cache_id, plane.clock.now())
        site = principal.user.agent_site
        if site is not None and rec.site != site:
            raise DatasetNotFoundError("another site's cache")
        require_dataset(plane, principal, rec.dataset, need)
    except DatasetNotFoundError:
        raise NotFoundError(f"no cache with id {cache_id}") from None
    return rec


def caches_page(plane: ControlPlane, caches: list[CacheRecord], paging: Paging) -> Page[CacheOut]:
    page = paginate(caches, paging)
    return Page[CacheOut](
        items=caches_out(plane, list(page.items)), next_cursor=page.next_cursor, total=page.total
    )


@router.get("/caches", response_model=Page[CacheOut])
def list_caches(
    principal: User,
    plane: Plane,
    paging: Paging,
    site: Annotated[str | None, Query(max_length=64)] = None,
    volume: Annotated[str | None, Query(max_length=64)] = None,
    dataset: Annotated[str | None, Query(max_length=64)] = None,
    state: StateFilter = None,
) -> Page[CacheOut]:
    """Caches of the datasets you can read, by site and volume."""
    caches = plane.topology.list_caches(
        site=site, volume=volume, dataset=dataset, now=plane.clock.now()
    )
    return caches_page(plane, visible_caches(plane, principal, caches, state), paging)


@router.get("/caches/{cache_id}", response_model=CacheOut)
def get_cache(cache_id: CacheId, principal: User, plane: Plane) -> CacheOut:
    """One cache: state, progress, size, last use, time to expiry, leases."""
    return caches_out(plane, [cache_or_404(plane, principal, cache_id, "reader")])[0]


@router.patch("/caches/{cache_id}", response_model=CacheOut)
def pin_cache(cache_id: CacheId, body: CachePatch, principal: User, plane: Plane) -> CacheOut:
    """Pin a cache (never evicted by TTL or for room) or unpin it (writers)."""
    rec = cache_or_404(plane, principal, cache_id, "writer")
    plane.topology.update_cache(rec.id, pinned=body.pinned, updated_at=plane.clock.now())
    return get_cache(cache_id, principal, plane)


@router.delete("/caches/{cache_id}", response_model=CacheOut, status_code=202, responses=_CONFLICT)
def clear_cache(cache_id: CacheId, principal: User, plane: Plane) -> CacheOut:
    """Evict a cache (writers): its site's agent removes the files; watch the state.

    A cache not yet started is dropped at once. One that is pinned, leased by a
    running job, or filling is refused (409) with what holds it.
    """
    rec = cache_or_404(plane, principal, cache_id, "writer")
    topo, now = plane.topology, plane.clock.now()
    if rec.state == "pending" and topo.update_cache(
        rec.id, expect_state="pending", state="evicted", updated_at=now
    ):
        return get_cache(cache_id, principal, plane)
    if rec.state in ("evicting", "evicted"):
        return caches_out(plane, [rec])[0]
    if rec.state in ("pending", "filling"):
        raise ConflictError(
            f"cache {rec.name} is filling", hint="Evict it once it is ready or has failed."
        )
    if rec.pinned:
        raise ConflictError(f"cache {rec.name} is pinned", hint="Unpin it first.")
    if rec.leases:
        raise ConflictError(
            f"cache {rec.name} is in use by {rec.leases} job(s)",
            hint="Evict it when they finish; it is evicted by TTL once unused anyway.",
        )
    topo.ask(rec.id, "evict")
    return get_cache(cache_id, principal, plane)


@router.get("/datasets/{dataset}/caches", response_model=Page[CacheOut], tags=["datasets"])
def dataset_caches(
    dataset: DatasetName,
    principal: User,
    plane: Plane,
    paging: Paging,
    state: StateFilter = None,
) -> Page[CacheOut]:
    """Where this dataset is cached (readers)."""
    require_dataset(plane, principal, dataset)
    caches = plane.topology.list_caches(dataset=dataset, now=plane.clock.now())
    return caches_page(plane, visible_caches(plane, principal, caches, state), paging)


@router.post(
    "/datasets/{dataset}/caches", response_model=CacheOut, status_code=202, tags=["datasets"]
)
def request_cache(dataset: DatasetName, body: CacheIn, principal: User, plane: Plane) -> CacheOut:
    """Cache a commit (or a folder of it) on a site or volume (writers). The site's agent
    fills it; poll GET /caches/{id} for progress. Idempotent per commit, path and volume.

    A reader is answered 403 saying the commit is not cached there and who can cache
    it (a reader may use a cache a writer asked for, but not ask for one).
    """
    role = require_dataset(plane, principal, dataset)
    if ROLE_RANK[role] < ROLE_RANK["writer"]:
        where = f"site {body.site!r}" if body.site else f"volume {body.volume!r}"
        spec = f"{dataset}@{body.ref}{f':{body.path}' if body.path else ''}"
        raise PermissionDeniedError(
            f"{spec} is not cached at {where}, and only writers of {dataset!r} (or org "
            "admins) can have it cached; your role is reader",
            hint=f"Ask a writer of {dataset!r} to run `lakecache cache add {spec} "
            f"--{'site ' + body.site if body.site else 'volume ' + str(body.volume)}`, "
            "or read it straight from the lake (`lakecache data pull`, or "
            "lakecache.use(..., cached=False)).",
        )
    rec = plane.caches().request(
        dataset, body.ref, site=body.site, volume=body.volume, path=body.path
    )
    return caches_out(plane, [rec])[0]
