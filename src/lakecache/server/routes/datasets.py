"""Datasets: the list with stats, one dataset, its members and tags, and deletion."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from lakecache.catalog.db import DatasetRecord, DatasetStats
from lakecache.catalog.names import HEAD_ALIASES
from lakecache.catalog.topology import CacheRecord
from lakecache.errors import AlreadyExistsError, NotFoundError
from lakecache.server.auth import (
    Plane,
    User,
    dataset_role,
    require_access,
    require_dataset,
    visible_datasets,
)
from lakecache.server.errors import COMMON_RESPONSES, ErrorBody, Responses
from lakecache.server.models import (
    CachePlace,
    DatasetIn,
    DatasetOut,
    MemberIn,
    MemberOut,
    TagIn,
    TagOut,
)
from lakecache.server.pagination import Page, Paging, paginate
from lakecache.server.params import DatasetName
from lakecache.server.runtime import ControlPlane

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=COMMON_RESPONSES)

_CONFLICT: Responses = {
    409: {"model": ErrorBody, "description": "Conflicts with the current state"}
}
UserName = Annotated[str, Path(min_length=1, max_length=64)]
TagName = Annotated[str, Path(min_length=1, max_length=128)]


def _places(caches: list[CacheRecord], dataset: str) -> list[CachePlace]:
    return [
        CachePlace(
            cache_id=c.id,
            site=c.site,
            volume=c.volume,
            commit=c.commit_id,
            subpath=c.subpath,
            state=c.state,  # type: ignore[arg-type]
        )
        for c in caches
        if c.dataset == dataset and c.state != "evicted"
    ]


def dataset_out(
    plane: ControlPlane,
    rec: DatasetRecord,
    role: str,
    caches: list[CacheRecord] | None = None,
    stats: DatasetStats | None = None,
) -> DatasetOut:
    if stats is None:
        stats = plane.hub.catalog.dataset_stats(rec.name)
    if caches is None:
        caches = plane.topology.list_caches(dataset=rec.name)
    return DatasetOut(
        name=rec.name,
        description=rec.description,
        owner=rec.owner,
        created_at=rec.created_at,
        role=role,  # type: ignore[arg-type]
        commit_count=stats["commit_count"],
        head=stats["head"],
        file_count=stats["file_count"],
        bytes=stats["bytes"],
        cached=_places(caches, rec.name),
    )


@router.get("", response_model=Page[DatasetOut])
def list_datasets(
    principal: User,
    plane: Plane,
    paging: Paging,
    q: Annotated[
        str | None, Query(max_length=200, description="Part of the name or description")
    ] = None,
) -> Page[DatasetOut]:
    """The datasets you can read, by name, with size, file and commit counts and where cached."""
    roles = visible_datasets(plane, principal)
    records = plane.hub.catalog.list_datasets()
    if roles is not None:
        records = [r for r in records if r.name in roles]
    if q:
        needle = q.lower()
        records = [r for r in records if needle in r.name or needle in r.description.lower()]
    page = paginate(records, paging)
    caches = plane.topology.list_caches() if page.items else []
    stats = plane.hub.catalog.datasets_stats([r.id for r in page.items])
    items = [
        dataset_out(plane, r, "admin" if roles is None else roles[r.name], caches, stats[r.id])
        for r in page.items
    ]
    return Page[DatasetOut](items=items, next_cursor=page.next_cursor, total=page.total)


@router.post("", response_model=DatasetOut, status_code=201, responses=_CONFLICT)
def create_dataset(body: DatasetIn, principal: User, plane: Plane) -> DatasetOut:
    """Create an empty dataset; you become its admin.

    A name taken by a dataset the caller cannot see is "not available", in the
    same words as a reserved name, so that the answer does not tell that it exists.
    """
    try:
        plane.accounts.create_owned_dataset(
            body.name, principal.user.name, body.description, now=plane.clock.now()
        )
    except AlreadyExistsError:
        if dataset_role(plane, principal, body.name) is not None:
            raise  # they can see it: say plainly that it exists
        raise AlreadyExistsError(
            f"the name {body.name!r} is not available", hint="Choose another name."
        ) from None
    return dataset_out(plane, plane.hub.catalog.get_dataset(body.name), "admin", [])


@router.get("/{dataset}", response_model=DatasetOut)
def get_dataset(dataset: DatasetName, principal: User, plane: Plane) -> DatasetOut:
    """One dataset with its stats (readers)."""
    access = require_access(plane, principal, dataset)
    return dataset_out(plane, access.dataset, access.role)


@router.delete("/{dataset}", status_code=204, response_class=Response, responses=_CONFLICT)
def delete_dataset(dataset: DatasetName, principal: User, plane: Plane) -> Response:
    """Delete a dataset from the catalog (dataset admins). Its caches must be cleared first."""
    require_dataset(plane, principal, dataset, "admin")
    plane.accounts.delete_dataset(dataset)
    return Response(status_code=204)


# -- members -------------------------------------------------------------------------------


@router.get("/{dataset}/members", response_model=Page[MemberOut])
def list_members(
    dataset: DatasetName, principal: User, plane: Plane, paging: Paging
) -> Page[MemberOut]:
    """Who may do what on the dataset (readers)."""
    require_dataset(plane, principal, dataset)
    page = paginate(plane.accounts.list_members(dataset), paging)
    items = [
        MemberOut(user=m.user, role=m.role, created_at=m.created_at)  # type: ignore[arg-type]
        for m in page.items
    ]
    return Page[MemberOut](items=items, next_cursor=page.next_cursor, total=page.total)


@router.put("/{dataset}/members/{user}", response_model=MemberOut, responses=_CONFLICT)
def set_member(
    dataset: DatasetName, user: UserName, body: MemberIn, principal: User, plane: Plane
) -> MemberOut:
    """Give a user a role on the dataset, or change it (dataset admins)."""
    require_dataset(plane, principal, dataset, "admin")
    m = plane.accounts.set_member(dataset, user, body.role, now=plane.clock.now())
    return MemberOut(user=m.user, role=m.role, created_at=m.created_at)  # type: ignore[arg-type]


@router.delete(
    "/{dataset}/members/{user}", status_code=204, response_class=Response, responses=_CONFLICT
)
def remove_member(dataset: DatasetName, user: UserName, principal: User, plane: Plane) -> Response:
    """Take a user off the dataset (dataset admins). The last admin cannot be removed."""
    require_dataset(plane, principal, dataset, "admin")
    plane.accounts.remove_member(dataset, user)
    return Response(status_code=204)


# -- tags ----------------------------------------------------------------------------------


@router.get("/{dataset}/tags", response_model=Page[TagOut])
def list_tags(dataset: DatasetName, principal: User, plane: Plane, paging: Paging) -> Page[TagOut]:
    """Tags of the dataset, by name (readers)."""
    require_dataset(plane, principal, dataset)
    tags = sorted(
        (
            TagOut(name=name, commit=cid)
            for cid, names in plane.hub.catalog.tags(dataset).items()
            for name in names
        ),
        key=lambda t: t.name,
    )
    page = paginate(tags, paging)
    return Page[TagOut](items=page.items, next_cursor=page.next_cursor, total=page.total)


@router.put("/{dataset}/tags/{tag}", response_model=TagOut, responses=_CONFLICT)
def set_tag(
    dataset: DatasetName, tag: TagName, body: TagIn, principal: User, plane: Plane
) -> TagOut:
    """Point a tag at a commit (writers); moving an existing tag needs force."""
    require_dataset(plane, principal, dataset, "writer")
    catalog = plane.hub.catalog
    commit_id = catalog.resolve(dataset, body.ref)
    catalog.set_tag(dataset, tag, commit_id, force=body.force)
    return TagOut(name=tag, commit=commit_id)


@router.delete("/{dataset}/tags/{tag}", status_code=204, response_class=Response)
def delete_tag(dataset: DatasetName, tag: TagName, principal: User, plane: Plane) -> Response:
    """Remove a tag, never the commit (writers)."""
    require_dataset(plane, principal, dataset, "writer")
    if tag in HEAD_ALIASES:
        raise NotFoundError(f"no tag {tag!r} in dataset {dataset!r}")
    plane.hub.catalog.delete_tag(dataset, tag)
    return Response(status_code=204)
