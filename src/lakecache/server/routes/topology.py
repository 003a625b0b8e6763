"""Sites, cache volumes (with capacity, committed and free bytes) and compute resources.

Every logged-in user sees the organisation's topology (it holds no dataset
names); org admins change it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from lakecache.catalog.topology import VolumeRecord
from lakecache.errors import NotFoundError
from lakecache.server.auth import OrgAdmin, Plane, User
from lakecache.server.errors import COMMON_RESPONSES, PermissionDeniedError
from lakecache.server.models import (
    CacheOut,
    ComputeIn,
    ComputeOut,
    SiteIn,
    SiteOut,
    VolumeIn,
    VolumeOut,
    VolumePatch,
    VolumeSpaceIn,
)
from lakecache.server.pagination import Page, Paging, paginate
from lakecache.server.routes.caches import StateFilter, caches_page, visible_caches
from lakecache.server.runtime import ControlPlane
from lakecache.server.views import Usage, volume_usage

router = APIRouter(tags=["topology"], responses=COMMON_RESPONSES)

Name = Annotated[str, Path(min_length=1, max_length=64)]
SiteFilter = Annotated[str | None, Query(max_length=64)]


def _sites(plane: ControlPlane) -> list[SiteOut]:
    topo = plane.topology
    vols, comp = topo.list_volumes(), topo.list_compute()
    return [
        SiteOut(
            name=s.name,
            description=s.description,
            volumes=[v.name for v in vols if v.site == s.name],
            compute=[c.name for c in comp if c.site == s.name],
        )
        for s in topo.list_sites()
    ]


def _volume_out(u: Usage) -> VolumeOut:
    v = u.volume
    return VolumeOut(
        name=v.name,
        site=v.site,
        root=v.root,
        capacity=v.capacity,
        ttl_seconds=v.ttl_seconds,
        committed=u.committed,
        free_fs=u.free_fs,
        available=u.available,
        caches=u.caches,
        linked_saved=u.linked_saved,
        space_reported_at=v.fs_reported_at,
    )


def _volumes_out(plane: ControlPlane, volumes: list[VolumeRecord]) -> list[VolumeOut]:
    topo = plane.topology
    caches = topo.list_caches() if volumes else []
    return [_volume_out(volume_usage(topo, v, caches)) for v in volumes]


@router.get("/sites", response_model=Page[SiteOut])
def list_sites(_: User, plane: Plane, paging: Paging) -> Page[SiteOut]:
    """Sites with the names of their volumes and compute resources."""
    page = paginate(_sites(plane), paging)
    return Page[SiteOut](items=page.items, next_cursor=page.next_cursor, total=page.total)


@router.post("/sites", response_model=SiteOut, status_code=201)
def add_site(body: SiteIn, _: OrgAdmin, plane: Plane) -> SiteOut:
    """Add a site (org admins)."""
    plane.topology.add_site(body.name, body.description, plane.clock.now())
    return SiteOut(name=body.name, description=body.description, volumes=[], compute=[])


@router.get("/sites/{site}", response_model=SiteOut)
def get_site(site: Name, _: User, plane: Plane) -> SiteOut:
    for s in _sites(plane):
        if s.name == site:
            return s
    raise NotFoundError(f"no site {site!r}", hint="List sites with GET /api/v1/sites.")


@router.get("/volumes", response_model=Page[VolumeOut])
def list_volumes(_: User, plane: Plane, paging: Paging, site: SiteFilter = None) -> Page[VolumeOut]:
    """Cache volumes with quota, bytes committed to caches, and what is still free."""
    page = paginate(plane.topology.list_volumes(site), paging)
    return Page[VolumeOut](
        items=_volumes_out(plane, list(page.items)), next_cursor=page.next_cursor, total=page.total
    )


@router.post("/volumes", response_model=VolumeOut, status_code=201)
def add_volume(body: VolumeIn, _: OrgAdmin, plane: Plane) -> VolumeOut:
    """Add a cache volume to a site (org admins). ``root`` is its mount path at the site."""
    v = plane.topology.add_volume(
        body.name, body.site, body.root, body.capacity, body.ttl_seconds, plane.clock.now()
    )
    return _volumes_out(plane, [v])[0]


@router.get("/volumes/{volume}", response_model=VolumeOut)
def get_volume(volume: Name, _: User, plane: Plane) -> VolumeOut:
    return _volumes_out(plane, [plane.topology.get_volume(volume)])[0]


@router.patch("/volumes/{volume}", response_model=VolumeOut)
def update_volume(volume: Name, body: VolumePatch, _: OrgAdmin, plane: Plane) -> VolumeOut:
    """Change a volume's capacity or TTL (org admins); fields left out stay."""
    v = plane.topology.update_volume(volume, capacity=body.capacity, ttl_seconds=body.ttl_seconds)
    return _volumes_out(plane, [v])[0]


@router.put("/volumes/{volume}/space", status_code=204, response_class=Response)
def report_space(volume: Name, body: VolumeSpaceIn, principal: User, plane: Plane) -> Response:
    """The volume's free and total bytes, as its site's agent sees them (the site's agent
    user, or org admins).

    The server shows them where it does not mount the volume itself, for
    ten minutes after each report.
    """
    site = plane.topology.get_volume(volume).site
    if not principal.org_admin and principal.user.agent_site != site:
        raise PermissionDeniedError(
            "only the agent of the volume's site, or an org admin, reports its space",
            hint=f"Run the agent as the agent user of site {site!r} "
            f"(lakecache user add NAME --agent-site {site}).",
        )
    plane.topology.report_volume_space(
        volume, free=body.free_bytes, total=body.total_bytes, now=plane.clock.now()
    )
    return Response(status_code=204)


@router.delete("/volumes/{volume}", status_code=204, response_class=Response)
def remove_volume(volume: Name, _: OrgAdmin, plane: Plane) -> Response:
    """Remove a cache volume from the catalog (org admins); it must hold no caches.

    Its files on disk are not touched.
    """
    plane.topology.remove_volume(volume)
    return Response(status_code=204)


@router.get("/volumes/{volume}/caches", response_model=Page[CacheOut])
def volume_caches(
    volume: Name,
    principal: User,
    plane: Plane,
    paging: Paging,
    state: StateFilter = None,
) -> Page[CacheOut]:
    """The caches on a volume, of the datasets you can read."""
    plane.topology.get_volume(volume)
    caches = plane.topology.list_caches(volume=volume, now=plane.clock.now())
    return caches_page(plane, visible_caches(plane, principal, caches, state), paging)


@router.get("/compute", response_model=Page[ComputeOut])
def list_compute(
    _: User, plane: Plane, paging: Paging, site: SiteFilter = None
) -> Page[ComputeOut]:
    """Compute resources per site (their backend settings stay on the server)."""
    items = [
        ComputeOut(name=c.name, site=c.site, backend=c.backend, volumes=list(c.volumes))
        for c in plane.topology.list_compute(site)
    ]
    page = paginate(items, paging)
    return Page[ComputeOut](items=page.items, next_cursor=page.next_cursor, total=page.total)


@router.post("/compute", response_model=ComputeOut, status_code=201)
def add_compute(body: ComputeIn, _: OrgAdmin, plane: Plane) -> ComputeOut:
    """Add a compute resource to a site (org admins)."""
    c = plane.topology.add_compute(
        body.name, body.site, body.backend, {}, body.volumes, plane.clock.now()
    )
    return ComputeOut(name=c.name, site=c.site, backend=c.backend, volumes=list(c.volumes))
