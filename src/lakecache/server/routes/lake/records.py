"""Recording what was uploaded, after checking it in the lake; commits and history."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Request

from lakecache.errors import (
    IntegrityError,
    InvalidPathError,
    LakeError,
    ObjectNotFoundError,
    UserError,
)
from lakecache.lake.objects import (
    BlobLocation,
    Commit,
    ManifestEntry,
    blob_key,
    check_digest,
    commit_key,
    decode_manifest,
    decode_pack_index,
    hash_bytes,
    manifest_key,
    pack_index_key,
    pack_key,
)
from lakecache.server.auth import Plane, Principal, User
from lakecache.server.errors import PermissionDeniedError
from lakecache.server.routes.lake.access import allowed, lake_access, size_of
from lakecache.server.routes.lake.models import BlobIn, CommitFull, CommitIn, PackIn, Recorded

if TYPE_CHECKING:
    from lakecache.server.runtime import ControlPlane


router = APIRouter(prefix="/lake")


@router.post("/packs", response_model=Recorded)
def record_pack(body: PackIn, request: Request, principal: User, plane: Plane) -> Recorded:
    """Record an uploaded pack and its blobs, once the lake shows it is what it claims (writers).

    The pack object must exist with ``size`` bytes, and its index object must
    hash to ``pack_id`` and lay ``blob_count`` blobs end to end over exactly
    those bytes. On a lake the server streams, each blob's bytes are hashed too.
    """
    allowed(plane, principal, body.datasets, "writer")
    lake = plane.hub.lake
    key = pack_key(body.pack_id)
    size = size_of(lake, key)
    if size is None:
        raise UserError(f"{key} is not in the lake", hint="Upload the pack before recording it.")
    if size != body.size:
        raise UserError(f"{key} holds {size} bytes, not {body.size} as declared")
    try:
        index = lake.get(pack_index_key(body.pack_id))
    except ObjectNotFoundError:
        raise UserError(
            f"{pack_index_key(body.pack_id)} is not in the lake",
            hint="Upload the pack's index before recording the pack.",
        ) from None
    if hash_bytes(index) != body.pack_id:
        raise UserError(f"the index of pack {body.pack_id[:16]} does not hash to its id")
    try:
        entries = decode_pack_index(index)
    except (ValueError, UnicodeDecodeError, IntegrityError):
        raise UserError(f"the index of pack {body.pack_id[:16]} is not a pack index") from None
    end = 0
    for _, offset, length in entries:
        if offset != end:
            raise UserError(f"the index of pack {body.pack_id[:16]} has a gap or overlap")
        end += length
    if end != size or len(entries) != body.blob_count:
        raise UserError(
            f"the index of pack {body.pack_id[:16]} covers {end} bytes in {len(entries)} blobs; "
            f"the pack has {size} bytes and {body.blob_count} blobs were declared"
        )
    if lake_access(request).presigner is None and size:
        data = memoryview(lake.get(key))
        for digest, offset, length in entries:
            if hash_bytes(data[offset : offset + length]) != digest:  # type: ignore[arg-type]
                raise UserError(f"a blob in pack {body.pack_id[:16]} does not match its digest")
    locs = [BlobLocation(d, n, body.pack_id, o) for d, o, n in entries]
    plane.hub.catalog.record_pack(body.pack_id, size, locs)
    return Recorded(key=key, blobs=len(locs))


@router.post("/blobs", response_model=Recorded)
def record_blob(body: BlobIn, principal: User, plane: Plane) -> Recorded:
    """Record an uploaded large blob, once the lake holds it with the declared size (writers)."""
    allowed(plane, principal, body.datasets, "writer")
    key = blob_key(body.digest)
    size = size_of(plane.hub.lake, key)
    if size is None:
        raise UserError(f"{key} is not in the lake", hint="Upload the blob before recording it.")
    if size != body.size:
        raise UserError(f"{key} holds {size} bytes, not {body.size} as declared")
    plane.hub.catalog.record_blob(BlobLocation(body.digest, size))
    return Recorded(key=key, blobs=1)


@router.post("/commits", response_model=CommitFull, status_code=201)
def add_commit(body: CommitIn, request: Request, principal: User, plane: Plane) -> CommitFull:
    """Add a commit whose objects are in the lake, moving the branch if it is still at
    ``expected_head`` (writers of the commit's dataset). 409 if someone committed first.

    The commit's author must be the caller's user name, org admins included (403
    otherwise): the id hashes the author, so the server cannot put the right name
    in; it refuses the wrong one, and the client builds its commits with the name
    ``GET /auth/session`` gives it (:attr:`lakecache.data.hub.Hub.author`).
    """
    raw = body.commit.encode()
    try:
        commit = Commit.from_json(raw)
        well_typed = (
            all(isinstance(v, str) for v in (commit.dataset, commit.author, commit.message))
            and all(isinstance(p, str) for p in commit.parents)
            and isinstance(commit.created_at, str)
            and all(type(v) is int and v >= 0 for v in (commit.file_count, commit.bytes))
        )
        if not well_typed:
            raise TypeError
        check_digest(commit.manifest)
        canonical = commit.to_json() == raw
    except (ValueError, TypeError, KeyError, AttributeError, IntegrityError):
        raise UserError("'commit' is not a lakecache commit object") from None
    if not canonical:
        raise UserError("the commit object is not in canonical form (as Commit.to_json writes it)")
    allowed(plane, principal, [commit.dataset], "writer")
    _check_author(commit, principal)
    commit_id = commit.id
    lake = plane.hub.lake
    try:
        stored = lake.get(commit_key(commit_id))
    except ObjectNotFoundError:
        raise UserError(
            f"{commit_key(commit_id)} is not in the lake", hint="Upload the commit object first."
        ) from None
    if stored != raw:
        raise UserError(f"{commit_key(commit_id)} in the lake differs from the commit sent")
    entries = _checked_manifest(plane, commit)
    access = lake_access(request)
    access.learn(commit_id, entries)
    plane.hub.catalog.add_commit(commit, expected_head=body.expected_head, branch=body.branch)
    return _full(commit_id, commit)


def _check_author(commit: Commit, principal: Principal) -> None:
    """Refuse a commit that names anyone but the caller as its author."""
    name = principal.user.name
    if commit.author != name:
        raise PermissionDeniedError(
            f"the commit names {commit.author!r} as its author, but you are logged in as "
            f"{name!r}; through a server, commits are by the logged-in user",
            hint=f"Build the commit with author {name!r} (GET /api/v1/auth/session says who "
            "you are); lakecache's CLI and SDK do this themselves when logged in.",
        )


def _checked_manifest(plane: ControlPlane, commit: Commit) -> list[ManifestEntry]:
    """The commit's manifest entries, after checking the manifest against the commit and the
    blob index; also leaves the manifest's local index for listings."""
    from lakecache.data.index import ManifestIndex

    key = manifest_key(commit.manifest)
    try:
        data = plane.hub.lake.get(key)
    except ObjectNotFoundError:
        raise UserError(f"{key} is not in the lake", hint="Upload the manifest first.") from None
    if hash_bytes(data) != commit.manifest:
        raise UserError(f"{key} in the lake does not hash to its name")
    try:
        entries = list(decode_manifest(data))
    except (ValueError, TypeError, LakeError, IntegrityError, InvalidPathError) as exc:
        raise UserError(f"{key} is not a valid manifest: {exc}") from None
    if len(entries) != commit.file_count or sum(e.size for e in entries) != commit.bytes:
        raise UserError(
            f"the commit says {commit.file_count} files and {commit.bytes} bytes; its manifest "
            f"has {len(entries)} files and {sum(e.size for e in entries)} bytes"
        )
    digests = {e.digest for e in entries}
    known = plane.hub.catalog.known_blobs(digests)
    if len(known) != len(digests):
        missing = sorted(digests - known)
        raise UserError(
            f"the manifest names {len(missing)} blob(s) the lake does not hold "
            f"(first {missing[0][:16]})",
            hint="Upload and record every pack and blob before adding the commit.",
        )
    ManifestIndex.build(plane.settings.state_dir, commit.manifest, entries)
    return entries


def _full(commit_id: str, c: Commit) -> CommitFull:
    return CommitFull(
        id=commit_id,
        dataset=c.dataset,
        manifest=c.manifest,
        parents=list(c.parents),
        author=c.author,
        message=c.message,
        created_at=c.created_at,
        file_count=c.file_count,
        bytes=c.bytes,
    )


@router.get("/commits/{commit_id}", response_model=CommitFull)
def get_commit(
    commit_id: str,
    principal: User,
    plane: Plane,
    dataset: Annotated[str, Query(min_length=1, max_length=64)],
) -> CommitFull:
    """One commit of ``dataset`` by its full id, with its manifest digest (readers)."""
    allowed(plane, principal, [dataset], "reader")
    return _full(commit_id, plane.hub.catalog.get_commit(dataset, commit_id))


@router.get("/log", response_model=list[CommitFull])
def log(
    principal: User,
    plane: Plane,
    dataset: Annotated[str, Query(min_length=1, max_length=64)],
    ref: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> list[CommitFull]:
    """The history from ``ref`` (default: the head of main), newest first (readers)."""
    allowed(plane, principal, [dataset], "reader")
    return [_full(c.id, c) for c in plane.hub.catalog.log(dataset, ref, limit)]
