"""Moving bytes: which blobs exist and where, presigned URLs, multipart uploads."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from lakecache.errors import UserError
from lakecache.server.auth import Plane, User
from lakecache.server.routes.lake.access import (
    MAX_BATCH,
    MAX_PARTS,
    MAX_PRESIGN,
    MIN_PART,
    URL_TTL,
    allowed,
    check_readable,
    key_kind,
    lake_access,
    presigner_of,
    size_of,
    url_expiry,
)
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
    """Which of these blobs the lake holds already, in any dataset (writers: deduplication)."""
    allowed(plane, principal, body.datasets, "writer")
    return KnownOut(known=sorted(plane.hub.catalog.known_blobs(set(body.digests))))


@router.post("/locate", response_model=LocateOut)
def locate(body: DigestsIn, principal: User, plane: Plane) -> LocateOut:
    """Where each known blob is: a pack and an offset, or an object of its own (readers)."""
    allowed(plane, principal, body.datasets, "reader")
    locs = plane.hub.catalog.locate_blobs(set(body.digests))
    packs: dict[str, int] = {}
    rows = []
    for loc in locs.values():
        index = -1 if loc.pack_id is None else packs.setdefault(loc.pack_id, len(packs))
        rows.append((loc.digest, loc.size, index, loc.offset))
    return LocateOut(packs=list(packs), blobs=rows)


@router.post("/exists", response_model=KeysOut)
def exists(body: KeysIn, principal: User, plane: Plane) -> KeysOut:
    """Which of these keys the lake holds (writers)."""
    allowed(plane, principal, body.datasets, "writer")
    for key in body.keys:
        key_kind(key)
    return KeysOut(keys=sorted(plane.hub.lake.exists(body.keys)))


@router.post("/presign", response_model=PresignOut)
def presign(body: PresignIn, request: Request, principal: User, plane: Plane) -> PresignOut:
    """Short-lived URLs for one operation's objects.

    GET: readers, for keys the named datasets reference (any byte range of
    them); a pack they share with other datasets by deduplication gets the
    server's own URL, which serves only the ranges of their blobs. PUT:
    writers, for new content-addressed keys, with the exact size to send; a
    key that exists comes back ``exists`` without a URL. On a lake the server
    streams, the URLs are the server's /lake/objects (send the token).
    """
    access = lake_access(request)
    gets = [i.key for i in body.items if i.method == "GET"]
    puts = [i for i in body.items if i.method == "PUT"]
    partial: set[str] = set()
    if gets:
        readable = allowed(plane, principal, body.datasets, "reader")
        partial = check_readable(access, readable, gets)
    existing: set[str] = set()
    if puts:
        allowed(plane, principal, body.datasets, "writer")
        for item in puts:
            key_kind(item.key)
            if item.size is None:
                raise UserError(f"PUT {item.key} needs its size", hint="Send 'size' in bytes.")
        existing = plane.hub.lake.exists(i.key for i in puts)
    expires = url_expiry()
    query = "?" + urlencode([("dataset", d) for d in body.datasets])
    out = []
    for item in body.items:
        if item.method == "PUT" and item.key in existing:
            out.append(Presigned(method="PUT", key=item.key, status="exists"))
            continue
        if access.presigner is None or (item.method == "GET" and item.key in partial):
            # Streamed by the server: a shared pack is read there, range by range.
            url = str(request.url_for("get_object", key=item.key)) + query
            bearer, when = True, None
        elif item.method == "GET":
            url, bearer, when = access.presigner.get(item.key), False, expires
        else:
            assert item.size is not None
            url, bearer, when = access.presigner.put(item.key, item.size), False, expires
        out.append(
            Presigned(
                method=item.method,
                key=item.key,
                status="ok",
                url=url,
                bearer=bearer,
                expires_at=when,
            )
        )
    return PresignOut(items=out)


@router.post("/multipart", response_model=MultipartOut)
def multipart_start(
    body: MultipartIn, request: Request, principal: User, plane: Plane
) -> MultipartOut:
    """Start a multipart upload of one large blob and presign every part (writers)."""
    allowed(plane, principal, body.datasets, "writer")
    kind, _ = key_kind(body.key)
    if kind != "blob":
        raise UserError(f"only blobs are uploaded in parts, not {body.key}")
    presigner = presigner_of(request)
    if plane.hub.lake.exists([body.key]):
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
    presigner.complete_multipart(body.key, body.upload_id, [(p.number, p.etag) for p in body.parts])
    size = size_of(plane.hub.lake, body.key)
    return StoredOut(key=body.key, status="stored", size=size or 0)


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
