"""Moving bytes: which blobs exist and where, presigned URLs, multipart uploads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from lakecache.errors import UserError
from lakecache.server.auth import Plane, User
from lakecache.server.routes.lake.access import (
    MAX_BATCH,
    MAX_PARTS,
    MAX_PRESIGN,
    MIN_PART,
    PUT_HEADERS,
    URL_TTL,
    allowed,
    check_readable,
    key_kind,
    lake_access,
    presigner_of,
    size_of,
    url_expiry,
)
from lakecache.server.routes.lake.grants import readable
from lakecache.server.routes.lake.models import (
    DigestsIn,
    KeysIn,
    KeysOut,
    KnownOut,
    LakeInfo,
    LocateOut,
    MultipartDoneIn,
    MultipartIn,
    MultipartOut,
    PartsIn,
    PartsOut,
    PartUrl,
    Presigned,
    PresignIn,
    PresignOut,
    StoredOut,
)
from lakecache.server.routes.lake.verify import pack_index

if TYPE_CHECKING:
    from lakecache.server.runtime import ControlPlane

router = APIRouter(prefix="/lake")


@router.get("", response_model=LakeInfo)
def lake_info(request: Request, principal: User, plane: Plane) -> LakeInfo:
    """How this server moves bytes: presigned URLs to the lake, or streamed through itself."""
    access = lake_access(request)
    return LakeInfo(
        mode=access.mode,
        part_size=max(plane.settings.part_size, MIN_PART),
        url_ttl_seconds=URL_TTL,
        max_batch=MAX_BATCH,
        max_presign=MAX_PRESIGN,
    )


@router.post("/known", response_model=KnownOut)
def known(body: DigestsIn, principal: User, plane: Plane) -> KnownOut:
    """Which of these blobs need no upload: those the datasets the caller can read hold, or
    that their writers uploaded for them (writers: deduplication). A digest known only
    elsewhere is answered unknown: its bytes must be uploaded (:mod:`.grants`)."""
    allowed(plane, principal, body.datasets, "writer")
    names = readable(plane, principal, body.datasets)
    return KnownOut(known=sorted(plane.hub.catalog.granted_blobs(names, set(body.digests))))


@router.post("/locate", response_model=LocateOut)
def locate(body: DigestsIn, principal: User, plane: Plane) -> LocateOut:
    """Where each blob of the datasets the caller can read is: a pack and an offset, or an
    object of its own (readers). Blobs they do not hold are left out, as unknown ones."""
    names = readable(plane, principal, body.datasets)
    locs = plane.hub.catalog.locate_granted(names, set(body.digests))
    packs: dict[str, int] = {}
    rows = []
    for loc in locs.values():
        index = -1 if loc.pack_id is None else packs.setdefault(loc.pack_id, len(packs))
        rows.append((loc.digest, loc.size, index, loc.offset))
    return LocateOut(packs=list(packs), blobs=rows)


@router.post("/exists", response_model=KeysOut)
def exists(body: KeysIn, request: Request, principal: User, plane: Plane) -> KeysOut:
    """Which of these keys the lake holds (writers). A blob counts only if the named datasets
    hold it, a pack only if one of their commits references it: the lake's other keys are
    none of the caller's business."""
    allowed(plane, principal, body.datasets, "writer")
    kinds = {key: key_kind(key)[0] for key in body.keys}
    names = readable(plane, principal, body.datasets)
    blobs = {key_kind(k)[1]: k for k, kind in kinds.items() if kind == "blob"}
    packs = [k for k, kind in kinds.items() if kind in ("pack", "pack_index")]
    plain = [k for k, kind in kinds.items() if kind in ("manifest", "commit")]
    found = set(plane.hub.lake.exists(plain)) if plain else set()
    found.update(blobs[d] for d in plane.hub.catalog.granted_blobs(names, set(blobs)))
    if packs:
        as_pack = {k: k.removesuffix(".idx") + ".pack" for k in packs}
        referenced = lake_access(request).in_scope(names, set(as_pack.values()))
        found.update(k for k, pack in as_pack.items() if pack in referenced)
    return KeysOut(keys=sorted(found))


@router.post("/presign", response_model=PresignOut)
def presign(body: PresignIn, request: Request, principal: User, plane: Plane) -> PresignOut:
    """Short-lived URLs for one operation's objects.

    GET: readers, for keys the named datasets reference (any byte range of
    them); a pack they share with other datasets by deduplication gets the
    server's own URL, which serves only the ranges of their blobs. PUT:
    writers, for new content-addressed keys, with the exact size to send and
    ``If-None-Match: *`` (both signed: a URL cannot replace an object). A key
    that exists comes back ``exists`` without a URL, or ``prove`` when it holds
    blobs the named datasets do not (the bytes go to the server's URL, hashed
    there, to show the caller holds them). On a lake the server streams, the
    URLs are the server's /lake/objects (send the token).
    """
    access = lake_access(request)
    gets = [i.key for i in body.items if i.method == "GET"]
    puts = [i for i in body.items if i.method == "PUT"]
    partial: set[str] = set()
    if gets:
        readable_names = allowed(plane, principal, body.datasets, "reader")
        partial = check_readable(access, readable_names, gets)
    existing: set[str] = set()
    to_prove: set[str] = set()
    if puts:
        allowed(plane, principal, body.datasets, "writer")
        for item in puts:
            key_kind(item.key)
            if item.size is None:
                raise UserError(f"PUT {item.key} needs its size", hint="Send 'size' in bytes.")
        existing = plane.hub.lake.exists(i.key for i in puts)
        if existing:
            to_prove = not_held(plane, readable(plane, principal, body.datasets), existing)
    expires = url_expiry()
    query = "?" + urlencode([("dataset", d) for d in body.datasets])
    out = []
    for item in body.items:
        if item.method == "PUT" and item.key in to_prove:
            url = str(request.url_for("put_object", key=item.key)) + query
            out.append(Presigned(method="PUT", key=item.key, status="prove", url=url, bearer=True))
            continue
        if item.method == "PUT" and item.key in existing:
            out.append(Presigned(method="PUT", key=item.key, status="exists"))
            continue
        headers: dict[str, str] = {}
        if access.presigner is None or (item.method == "GET" and item.key in partial):
            # Streamed by the server: a shared pack is read there, range by range.
            url = str(request.url_for("get_object", key=item.key)) + query
            bearer, when = True, None
        elif item.method == "GET":
            url, bearer, when = access.presigner.get(item.key), False, expires
        else:
            assert item.size is not None
            url, bearer, when = access.presigner.put(item.key, item.size), False, expires
            headers = dict(PUT_HEADERS)
        out.append(
            Presigned(
                method=item.method,
                key=item.key,
                status="ok",
                url=url,
                bearer=bearer,
                expires_at=when,
                headers=headers,
            )
        )
    return PresignOut(items=out)


def not_held(plane: ControlPlane, datasets: list[str], keys: Iterable[str]) -> set[str]:
    """Of these existing keys, the recorded packs and blobs holding a blob ``datasets`` do
    not hold: a writer must show it has their bytes before it may name them. Keys not
    recorded yet are left out: their record reads them back and grants them then."""
    catalog = plane.hub.catalog
    out = set()
    for key in keys:
        kind, ident = key_kind(key)
        if kind == "blob":
            digests = {ident} if catalog.locate_blobs([ident]) else set()
        elif kind == "pack" and catalog.pack_sizes([ident]):
            digests = {d for d, _, _ in pack_index(plane.hub.lake, ident)}
        else:
            continue
        if digests - catalog.granted_blobs(datasets, digests):
            out.add(key)
    return out


@router.post("/multipart", response_model=MultipartOut)
def multipart_start(
    body: MultipartIn, request: Request, principal: User, plane: Plane
) -> MultipartOut:
    """Start a multipart upload of one large blob and presign every part (writers).

    A blob the lake holds already is ``exists``, or ``prove`` when the named
    datasets do not hold it (as for :func:`presign`).
    """
    allowed(plane, principal, body.datasets, "writer")
    kind, _ = key_kind(body.key)
    if kind != "blob":
        raise UserError(f"only blobs are uploaded in parts, not {body.key}")
    presigner = presigner_of(request)
    if plane.hub.lake.exists([body.key]):
        names = readable(plane, principal, body.datasets)
        if not_held(plane, names, [body.key]):
            query = "?" + urlencode([("dataset", d) for d in body.datasets])
            url = str(request.url_for("put_object", key=body.key)) + query
            return MultipartOut(status="prove", url=url)
        return MultipartOut(status="exists")
    part_size = max(
        body.part_size or plane.settings.part_size, MIN_PART, -(-body.size // MAX_PARTS)
    )
    upload_id = presigner.create_multipart(body.key)
    parts = []
    for number, start in enumerate(range(0, body.size, part_size), start=1):
        size = min(part_size, body.size - start)
        parts.append(
            PartUrl(number=number, size=size, url=presigner.part(body.key, upload_id, number, size))
        )
    return MultipartOut(
        status="ok", upload_id=upload_id, part_size=part_size, parts=parts, expires_at=url_expiry()
    )


@router.post("/multipart/parts", response_model=PartsOut)
def multipart_parts(body: PartsIn, request: Request, principal: User, plane: Plane) -> PartsOut:
    """Sign some parts of a started upload again, for an upload that outlived its URLs."""
    allowed(plane, principal, body.datasets, "writer")
    if key_kind(body.key)[0] != "blob":
        raise UserError(f"{body.key} is not a blob")
    presigner = presigner_of(request)
    count = -(-body.size // body.part_size)
    parts = []
    for number in sorted(set(body.numbers)):
        if not 1 <= number <= count:
            raise UserError(f"part {number} is not one of the {count} parts of {body.key}")
        size = min(body.part_size, body.size - (number - 1) * body.part_size)
        parts.append(
            PartUrl(
                number=number, size=size, url=presigner.part(body.key, body.upload_id, number, size)
            )
        )
    return PartsOut(parts=parts, expires_at=url_expiry())


@router.post("/multipart/complete", response_model=StoredOut)
def multipart_complete(
    body: MultipartDoneIn, request: Request, principal: User, plane: Plane
) -> StoredOut:
    """Join the uploaded parts into the object (writers)."""
    allowed(plane, principal, body.datasets, "writer")
    if key_kind(body.key)[0] != "blob" or not body.parts:
        raise UserError(f"nothing to complete for {body.key}")
    presigner = presigner_of(request)
    # Never over an object that exists (a recorded blob's bytes are checked once, then
    # trusted): checked first, then again by S3 itself (If-None-Match) against a race.
    stored = not plane.hub.lake.exists([body.key]) and presigner.complete_multipart(
        body.key, body.upload_id, [(p.number, p.etag) for p in body.parts]
    )
    if not stored:
        presigner.abort_multipart(body.key, body.upload_id)
    size = size_of(plane.hub.lake, body.key)
    return StoredOut(key=body.key, status="stored" if stored else "exists", size=size or 0)


@router.post("/multipart/abort", status_code=204, response_class=Response)
def multipart_abort(
    body: MultipartDoneIn, request: Request, principal: User, plane: Plane
) -> Response:
    """Give up a multipart upload; its parts are deleted (writers)."""
    allowed(plane, principal, body.datasets, "writer")
    if key_kind(body.key)[0] != "blob":
        raise UserError(f"{body.key} is not a blob")
    presigner = lake_access(request).presigner
    if presigner is not None:
        presigner.abort_multipart(body.key, body.upload_id)
    return Response(status_code=204)
