"""Recording what was uploaded, after checking it in the lake; commits and history."""

from __future__ import annotations

from datetime import datetime
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
    hash_bytes,
    manifest_key,
    pack_key,
)
from lakecache.server.auth import Plane, Principal, User
from lakecache.server.errors import PermissionDeniedError
from lakecache.server.routes.lake.access import allowed, lake_access
from lakecache.server.routes.lake.grants import ungranted
from lakecache.server.routes.lake.models import BlobIn, CommitFull, CommitIn, PackIn, Recorded
from lakecache.server.routes.lake.verify import pack_index, refuse_garbage

if TYPE_CHECKING:
    from lakecache.server.runtime import ControlPlane


router = APIRouter(prefix="/lake")

#: Seconds a commit's created_at may differ from the server's clock.
CLOCK_SKEW = 300


@router.post("/packs", response_model=Recorded)
def record_pack(body: PackIn, request: Request, principal: User, plane: Plane) -> Recorded:
    """Record an uploaded pack and its blobs, once the server has hashed them (writers).

    The pack's index object must hash to ``pack_id`` and lay ``blob_count``
    blobs end to end over ``size`` bytes; the pack object is then read back once,
    in segments read at once, and every blob hashed against the index as it
    arrives (:mod:`.verify`). A pack whose bytes
    lie is deleted and refused. The blobs are granted to the named datasets the
    caller writes (:mod:`.grants`). A pack recorded before is answered at once and
    grants nothing: whoever records it now did not upload it.
    """
    writable = allowed(plane, principal, body.datasets, "writer")
    lake = plane.hub.lake
    catalog = plane.hub.catalog
    key = pack_key(body.pack_id)
    if catalog.pack_sizes([body.pack_id]):
        return Recorded(key=key, blobs=body.blob_count)
    entries = pack_index(lake, body.pack_id)
    end = sum(n for _, _, n in entries)
    if end != body.size or len(entries) != body.blob_count:
        raise UserError(
            f"the index of pack {body.pack_id[:16]} covers {end} bytes in {len(entries)} blobs; "
            f"{body.size} bytes and {body.blob_count} blobs were declared"
        )
    try:
        lake_access(request).pack_checker.check(lake, key, entries)
    except IntegrityError as exc:
        raise refuse_garbage(lake, key, exc) from None
    locs = [BlobLocation(d, n, body.pack_id, o) for d, o, n in entries]
    catalog.record_pack(body.pack_id, end, locs, granted_to=writable)
    return Recorded(key=key, blobs=len(locs))


@router.post("/blobs", response_model=Recorded)
def record_blob(body: BlobIn, request: Request, principal: User, plane: Plane) -> Recorded:
    """Record an uploaded large blob, once the server has read it back and hashed it (writers).

    An object whose bytes do not hash to its key is deleted and refused. The
    blob is granted to the named datasets the caller writes; a blob recorded
    before is answered at once and grants nothing.
    """
    writable = allowed(plane, principal, body.datasets, "writer")
    lake = plane.hub.lake
    catalog = plane.hub.catalog
    key = blob_key(body.digest)
    if catalog.locate_blobs([body.digest]):
        return Recorded(key=key, blobs=1)
    digest, size = lake_access(request).pack_checker.blob_digest(lake, key)
    if digest != body.digest:
        raise refuse_garbage(
            lake, key, IntegrityError(f"the bytes of {key} do not hash to its name")
        )
    if size != body.size:
        raise UserError(f"{key} holds {size} bytes, not {body.size} as declared")
    catalog.record_blob(BlobLocation(body.digest, size), granted_to=writable)
    return Recorded(key=key, blobs=1)


@router.post("/commits", response_model=CommitFull, status_code=201)
def add_commit(body: CommitIn, request: Request, principal: User, plane: Plane) -> CommitFull:
    """Add a commit whose objects are in the lake, moving the branch if it is still at
    ``expected_head`` (writers of the commit's dataset). 409 if someone committed first.

    Lineage and time are the server's, and the id hashes them, so the server
    refuses what it cannot put right itself: the author must be the caller's
    user name, org admins included (403); the parents must be exactly the head
    the commit replaces, ``expected_head`` (400); ``created_at`` must be the
    server's clock give or take :data:`CLOCK_SKEW` (400). The client builds its
    commits with the name ``GET /auth/session`` gives it
    (:attr:`lakecache.data.hub.Hub.author`). Every blob the manifest names must be
    one the commit's dataset may name, or one a dataset the caller can read holds
    (:mod:`.grants`): knowing a digest is not enough.
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
    _check_lineage(commit, body.expected_head, plane.clock.now())
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
    entries, adopted = _checked_manifest(plane, principal, commit)
    access = lake_access(request)
    access.learn(commit_id, entries)
    catalog = plane.hub.catalog
    catalog.add_commit(commit, expected_head=body.expected_head, branch=body.branch)
    # From now on the commit's dataset holds its blobs, those from other datasets too.
    catalog.grant_blobs([commit.dataset], adopted, commit_id=commit_id)
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


def _check_lineage(commit: Commit, expected_head: str | None, now: datetime) -> None:
    """Refuse parents other than the head the commit replaces, and a time off the server's."""
    parents = (expected_head,) if expected_head else ()
    if commit.parents != parents:
        said = ", ".join(p[:12] for p in commit.parents) or "none"
        raise UserError(
            f"the commit names parents {said}, but it replaces "
            f"{(expected_head or 'no commit')[:12]}; a commit's parent is the head it replaces",
            hint="Build the commit on the branch's head (expected_head) as its only parent.",
        )
    try:
        made = datetime.fromisoformat(commit.created_at)
    except ValueError:
        made = None
    if made is None or made.tzinfo is None:
        raise UserError(
            f"the commit's created_at {commit.created_at[:40]!r} is not a time with a zone",
            hint="Use datetime.now(UTC).isoformat().",
        )
    off = (made - now).total_seconds()
    if abs(off) > CLOCK_SKEW:
        raise UserError(
            f"the commit's created_at is {abs(off):.0f} s "
            f"{'ahead of' if off > 0 else 'behind'} this server's clock; commits are "
            f"stamped with the server's time (within {CLOCK_SKEW} s)",
            hint="Set this machine's clock right (NTP), then commit again; "
            "the uploaded files are reused.",
        )


def _checked_manifest(
    plane: ControlPlane, principal: Principal, commit: Commit
) -> tuple[list[ManifestEntry], set[str]]:
    """The commit's manifest entries, and the blobs it names that its dataset takes from
    other datasets the caller can read, after checking the manifest against the commit and
    the grants; also leaves the manifest's local index for listings."""
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
    adopted, missing = ungranted(plane, principal, commit.dataset, digests)
    if missing:
        first = sorted(missing)[0]
        raise UserError(
            f"the manifest names {len(missing)} blob(s) that {commit.dataset!r}'s writers did "
            f"not upload and no dataset you can read holds (first {first[:16]})",
            hint="Upload and record every pack and blob before adding the commit; knowing "
            "a blob's digest is not enough, the server must have hashed its bytes for you.",
        )
    ManifestIndex.build(plane.settings.state_dir, commit.manifest, entries)
    return entries, adopted


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
