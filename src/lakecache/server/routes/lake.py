"""The lake for clients: commit and pull through the server, bytes straight to the lake.

A client working against a server (:mod:`lakecache.client`) never holds the
lake's credentials. It asks here, in batches, for what it may do:

=====================================  =========  ============================================
endpoint                               role       what
=====================================  =========  ============================================
``GET  /lake``                         any user   mode (``presign`` or ``stream``), part size
``POST /lake/known``                   writer     which digests the lake already holds
``POST /lake/locate``                  reader     where blobs are (pack and offset)
``POST /lake/exists``                  writer     which keys exist
``POST /lake/presign``                 reader     short-lived URLs: GET (in scope), PUT (new keys;
                                       /writer    writers)
``POST /lake/multipart[/complete|     writer     a large blob in parts, each part presigned
/abort]``
``POST /lake/packs``, ``/lake/blobs``  writer     record uploaded objects, after checking them
``POST /lake/commits``                 writer     add a commit (compare-and-swap of the branch)
``GET  /lake/commits/{id}``, ``/log``  reader     commits with their manifest digest
``GET|PUT /lake/objects/{key}``        reader     the bytes themselves, streamed by the server
                                       /writer    (a local-folder lake has no URLs to sign)
=====================================  =========  ============================================

Every request names the datasets it works for (``datasets`` in the body,
``dataset=`` in the query); the caller must hold the role on at least one of
them. Someone with no role on any gets the 404 of a dataset that does not
exist, as everywhere in the API.

Scope. A GET (presigned or streamed) is allowed only for a key that one of the
named datasets references: the manifest or commit object of one of its
commits, or a pack or large blob that one of its manifests holds. Which keys a
commit references is worked out once per commit (from its manifest and the
blob index) and kept under ``state/scopes/``: derived data, rebuilt if lost.
A PUT is allowed to writers only, for a content-addressed key (``packs/``,
``blobs/``, ``manifests/``, ``commits/``) that does not exist yet: an existing
key is answered ``exists`` and never overwritten. Presigned URLs live
:data:`URL_TTL` seconds; a PUT's URL is signed with its Content-Length, so it
takes exactly the bytes declared.

Trust. Nothing a client uploads is believed until checked: a pack is recorded
only if its object exists with the declared size and its index hashes to the
pack's id and tiles the pack exactly; a large blob only if it exists with the
declared size; a commit only if its object is in the lake byte for byte, hashes
to its id, and its manifest exists, hashes to its digest, matches the commit's
counts and names only blobs the lake holds. Streamed uploads of blobs,
manifests, commits and pack indexes are hashed on the way in.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlencode

import blake3
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from lakecache.catalog.accounts import ROLE_RANK
from lakecache.catalog.names import MAIN
from lakecache.errors import (
    DatasetNotFoundError,
    IntegrityError,
    InvalidPathError,
    LakeError,
    NotFoundError,
    ObjectNotFoundError,
    UserError,
)
from lakecache.lake.base import check_key, local_path
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
from lakecache.server.auth import Plane, Principal, User, dataset_role
from lakecache.server.errors import COMMON_RESPONSES, PermissionDeniedError
from lakecache.server.routes.commits import open_index

if TYPE_CHECKING:
    from lakecache.lake import Lake
    from lakecache.server.runtime import ControlPlane

router = APIRouter(prefix="/lake", tags=["lake"], responses=COMMON_RESPONSES)

#: Seconds a presigned URL stays valid.
URL_TTL = 900
#: Digests, keys or URLs in one request.
MAX_BATCH = 10_000
MAX_PRESIGN = 1_000
#: Datasets one request may name.
MAX_DATASETS = 16
#: S3's limits on one PUT and on the parts of one multipart upload.
MAX_PUT = 5 << 30
MIN_PART = 5 << 20
MAX_PARTS = 10_000
#: Commits whose key sets stay in memory.
SCOPE_CACHE = 256
#: Digests asked of the blob index at once while working out a commit's scope.
LOCATE_CHUNK = 20_000
#: Bytes a streamed upload gathers before each write (written in a worker thread).
STREAM_WRITE = 4 << 20

_HEX64 = "[0-9a-f]{64}"
_KEY_KINDS = {
    "pack": re.compile(rf"packs/({_HEX64})\.pack"),
    "pack_index": re.compile(rf"packs/({_HEX64})\.idx"),
    "blob": re.compile(r"blobs/([0-9a-f]{2})/([0-9a-f]{62})"),
    "manifest": re.compile(rf"manifests/({_HEX64})"),
    "commit": re.compile(rf"commits/({_HEX64})\.json"),
}
_KEY_HINT = (
    "Lake keys a client may use: packs/<id>.pack, packs/<id>.idx, blobs/ab/<rest>, "
    "manifests/<digest>, commits/<id>.json (lowercase hex)."
)

Digest = Annotated[str, Field(pattern=f"^{_HEX64}$")]
DatasetList = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]],
    Field(min_length=1, max_length=MAX_DATASETS, description="Datasets this work is for"),
]
LakeKey = Annotated[str, Field(min_length=1, max_length=300)]


# -- models --------------------------------------------------------------------------------


class LakeInfo(BaseModel):
    #: ``presign``: transfer with the lake directly; ``stream``: through /lake/objects.
    mode: Literal["presign", "stream"]
    part_size: int
    url_ttl_seconds: int
    max_batch: int
    max_presign: int


class DigestsIn(BaseModel):
    datasets: DatasetList
    digests: list[Digest] = Field(max_length=MAX_BATCH)


class KnownOut(BaseModel):
    known: list[str]


class LocateOut(BaseModel):
    #: Pack ids, referred to by position from ``blobs``.
    packs: list[str]
    #: ``[digest, size, pack (index into packs, or -1: stored alone), offset]``.
    blobs: list[tuple[str, int, int, int]]


class KeysIn(BaseModel):
    datasets: DatasetList
    keys: list[LakeKey] = Field(max_length=MAX_BATCH)


class KeysOut(BaseModel):
    keys: list[str]


class PresignItem(BaseModel):
    method: Literal["GET", "PUT"]
    key: LakeKey
    #: Bytes a PUT will send (signed: the URL takes exactly this many).
    size: int | None = Field(default=None, ge=0, le=MAX_PUT)


class PresignIn(BaseModel):
    datasets: DatasetList
    items: list[PresignItem] = Field(min_length=1, max_length=MAX_PRESIGN)


class Presigned(BaseModel):
    method: Literal["GET", "PUT"]
    key: str
    #: ``exists``: a PUT of a key the lake already holds (skip it); no URL.
    status: Literal["ok", "exists"]
    url: str | None = None
    #: The URL is the server's own (stream mode): send the API token with it.
    bearer: bool = False
    expires_at: datetime | None = None


class PresignOut(BaseModel):
    items: list[Presigned]


class MultipartIn(BaseModel):
    datasets: DatasetList
    key: LakeKey
    size: int = Field(gt=0, le=MAX_PARTS * MAX_PUT)
    #: Preferred part size; the server may raise it (S3 allows 10,000 parts).
    part_size: int | None = Field(default=None, ge=MIN_PART, le=MAX_PUT)


class PartUrl(BaseModel):
    number: int
    size: int
    url: str


class MultipartOut(BaseModel):
    status: Literal["ok", "exists"]
    upload_id: str | None = None
    part_size: int = 0
    parts: list[PartUrl] = Field(default_factory=list)
    expires_at: datetime | None = None


class PartsIn(BaseModel):
    """Sign parts of a started upload again (their URLs expired)."""

    datasets: DatasetList
    key: LakeKey
    upload_id: str = Field(min_length=1, max_length=1024)
    size: int = Field(gt=0, le=MAX_PARTS * MAX_PUT)
    part_size: int = Field(ge=MIN_PART, le=MAX_PUT)
    numbers: list[int] = Field(min_length=1, max_length=MAX_PARTS)


class PartsOut(BaseModel):
    parts: list[PartUrl]
    expires_at: datetime


class PartDone(BaseModel):
    number: int = Field(ge=1, le=MAX_PARTS)
    etag: str = Field(min_length=1, max_length=200)


class MultipartDoneIn(BaseModel):
    datasets: DatasetList
    key: LakeKey
    upload_id: str = Field(min_length=1, max_length=1024)
    parts: list[PartDone] = Field(default_factory=list, max_length=MAX_PARTS)


class PackIn(BaseModel):
    datasets: DatasetList
    pack_id: Digest
    size: int = Field(ge=0)
    blob_count: int = Field(ge=0)


class BlobIn(BaseModel):
    datasets: DatasetList
    digest: Digest
    size: int = Field(ge=0)


class Recorded(BaseModel):
    key: str
    blobs: int


class CommitIn(BaseModel):
    #: The commit object exactly as stored in the lake (canonical JSON).
    commit: str = Field(min_length=2, max_length=1 << 20)
    #: The branch must still point here (null: the branch must not exist yet).
    expected_head: Digest | None = None
    branch: str = Field(default=MAIN, min_length=1, max_length=128)


class CommitFull(BaseModel):
    """A commit as :class:`lakecache.lake.objects.Commit` holds it, with its id."""

    id: str
    dataset: str
    manifest: str
    parents: list[str]
    author: str
    message: str
    created_at: str
    file_count: int
    bytes: int


class StoredOut(BaseModel):
    key: str
    status: Literal["stored", "exists"]
    size: int


# -- the shared state: scopes and the presigner ----------------------------------------------


class LakeAccess:
    """What the lake endpoints share for one server: which keys each commit references,
    and how to sign URLs for the lake (None for a lake that is streamed instead).

    Thread-safe. Made once per app, on first use.
    """

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.presigner = _S3Presigner.for_lake(plane.hub.lake)
        self._scopes: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._lock = threading.Lock()
        self._scope_dir = plane.settings.state_dir / "scopes"

    @property
    def mode(self) -> Literal["presign", "stream"]:
        return "presign" if self.presigner is not None else "stream"

    def commit_keys(self, commit_id: str, commit: Commit) -> frozenset[str]:
        """The packs and large blobs commit ``commit_id``'s manifest references.

        Worked out once per commit (an immutable list) and kept on disk; a
        commit's first pull through the server pays one pass over its manifest.
        """
        with self._lock:
            found = self._scopes.get(commit_id)
            if found is not None:
                self._scopes.move_to_end(commit_id)
                return found
        path = self._scope_dir / f"{commit_id}.keys"
        try:
            keys = frozenset(path.read_text().split())
        except FileNotFoundError:
            with open_index(self.plane, commit.manifest) as idx:
                keys = self._keys_of(e.digest for e in idx.entries())
            self._save(path, keys)
        return self._remember(commit_id, keys)

    def learn(self, commit_id: str, entries: Iterable[ManifestEntry]) -> frozenset[str]:
        """Work out a new commit's keys from its manifest's entries (at add_commit)."""
        keys = self._keys_of(e.digest for e in entries)
        self._save(self._scope_dir / f"{commit_id}.keys", keys)
        return self._remember(commit_id, keys)

    def _keys_of(self, digests: Iterable[str]) -> frozenset[str]:
        catalog = self.plane.hub.catalog
        keys: set[str] = set()
        it = iter(digests)
        while True:
            chunk = [d for _, d in zip(range(LOCATE_CHUNK), it, strict=False)]
            if not chunk:
                break
            keys.update(loc.key for loc in catalog.locate_blobs(set(chunk)).values())
        return frozenset(keys)

    def _save(self, path: Path, keys: frozenset[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{os.getpid()}-{os.urandom(4).hex()}")
        tmp.write_text("".join(k + "\n" for k in sorted(keys)))
        os.replace(tmp, path)

    def _remember(self, commit_id: str, keys: frozenset[str]) -> frozenset[str]:
        with self._lock:
            self._scopes[commit_id] = keys
            self._scopes.move_to_end(commit_id)
            while len(self._scopes) > SCOPE_CACHE:
                self._scopes.popitem(last=False)
        return keys

    def in_scope(self, datasets: Iterable[str], keys: Iterable[str]) -> set[str]:
        """The subset of ``keys`` that one of ``datasets`` references (see the module doc).

        Manifests and commit objects are matched against the commit list first;
        packs and blobs against each commit's key set, newest commit first,
        stopping as soon as every key is placed.
        """
        wanted = set(keys)
        left = set(wanted)
        catalog = self.plane.hub.catalog
        for dataset in datasets:
            if not left:
                break
            try:
                commits = catalog.log(dataset)
            except NotFoundError:
                continue
            for c in commits:
                left.discard(commit_key(c.id))
                left.discard(manifest_key(c.manifest))
            if not any(_kind(k)[0] in ("pack", "blob") for k in left):
                continue
            for c in commits:
                left -= self.commit_keys(c.id, c)
                if not left:
                    break
        return wanted - left


def _access(request: Request) -> LakeAccess:
    state = request.app.state
    access: LakeAccess | None = getattr(state, "lake_access", None)
    if access is None:
        with _ACCESS_LOCK:
            access = getattr(state, "lake_access", None)
            if access is None:
                access = state.lake_access = LakeAccess(state.plane)
    return access


_ACCESS_LOCK = threading.Lock()


class _S3Presigner:
    """Signs URLs for one S3 lake with the server's own credentials (SigV4, path style)."""

    def __init__(self, lake: Any) -> None:
        # S3Lake keeps its boto3 client private; signing is this module's only use of it.
        self._lake = lake
        self._client = lake._client
        self.bucket: str = lake.bucket
        self.prefix: str = lake.prefix

    @classmethod
    def for_lake(cls, lake: Lake) -> _S3Presigner | None:
        if getattr(lake, "_client", None) is None or not hasattr(lake, "bucket"):
            return None
        return cls(lake)

    def _sign(self, op: str, key: str, **params: Any) -> str:
        url: str = self._client.generate_presigned_url(
            op,
            Params={"Bucket": self.bucket, "Key": self.prefix + key, **params},
            ExpiresIn=URL_TTL,
        )
        return url

    def get(self, key: str) -> str:
        return self._sign("get_object", key)

    def put(self, key: str, size: int) -> str:
        return self._sign("put_object", key, ContentLength=size)

    def part(self, key: str, upload_id: str, number: int, size: int) -> str:
        return self._sign(
            "upload_part", key, UploadId=upload_id, PartNumber=number, ContentLength=size
        )

    def _call(self, what: str, key: str, fn: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, fn)(Bucket=self.bucket, Key=self.prefix + key, **params)
        except (BotoCoreError, ClientError) as exc:
            self._lake._raise(exc, what, key)

    def create_multipart(self, key: str) -> str:
        return str(self._call("put", key, "create_multipart_upload")["UploadId"])

    def complete_multipart(self, key: str, upload_id: str, parts: list[PartDone]) -> None:
        self._call(
            "put",
            key,
            "complete_multipart_upload",
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [
                    {"PartNumber": p.number, "ETag": p.etag}
                    for p in sorted(parts, key=lambda p: p.number)
                ]
            },
        )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._call("abort", key, "abort_multipart_upload", UploadId=upload_id)


# -- helpers -----------------------------------------------------------------------------------


def _kind(key: str) -> tuple[str, str]:
    """(kind, id) of a client key, or raise InvalidPathError."""
    for kind, pattern in _KEY_KINDS.items():
        m = pattern.fullmatch(key)
        if m:
            return kind, "".join(m.groups())
    raise InvalidPathError(f"{key!r} is not a lake key clients may use", hint=_KEY_HINT)


def _allowed(
    plane: ControlPlane, principal: Principal, datasets: list[str], need: str
) -> list[str]:
    """The named datasets on which the caller holds ``need`` (at least one, else 404 / 403)."""
    roles = [(d, dataset_role(plane, principal, d)) for d in dict.fromkeys(datasets)]
    ok = [d for d, r in roles if r is not None and ROLE_RANK[r] >= ROLE_RANK[need]]
    if ok:
        return ok
    member = [(d, r) for d, r in roles if r is not None]
    if not member:
        raise DatasetNotFoundError(f"no dataset named {datasets[0]!r}")
    d, r = member[0]
    raise PermissionDeniedError(
        f"your role on dataset {d!r} is {r}; this needs {need}",
        hint=f"Ask an admin of {d!r} for the {need} role.",
    )


def _check_readable(access: LakeAccess, datasets: list[str], keys: list[str]) -> None:
    for key in keys:
        kind, _ = _kind(key)
        if kind == "pack_index":
            raise PermissionDeniedError(
                f"{key} is not readable by clients", hint="Ask for the pack itself (.pack)."
            )
    outside = set(keys) - access.in_scope(datasets, keys)
    if outside:
        first = sorted(outside)[0]
        raise PermissionDeniedError(
            f"{first} is not part of dataset {' or '.join(repr(d) for d in datasets)}"
            + (f" (and {len(outside) - 1} more keys)" if len(outside) > 1 else ""),
            hint="Ask only for objects the dataset's commits reference.",
        )


def _presigner(request: Request) -> _S3Presigner:
    presigner = _access(request).presigner
    if presigner is None:
        raise UserError(
            "this server's lake is a folder it streams to; there are no URLs or parts to sign",
            hint="PUT the whole object to /api/v1/lake/objects/KEY.",
        )
    return presigner


def _size_of(lake: Lake, key: str) -> int | None:
    """The size of the object at ``key``, None if there is none (one LIST request)."""
    for info in lake.list(key):
        if info.key == key:
            return info.size
    return None


def _expires() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=URL_TTL)


def _verify_key_bytes(key: str, digest: str) -> None:
    """Refuse bytes whose BLAKE3 does not match a content-addressed key."""
    kind, ident = _kind(key)
    if kind in ("blob", "manifest", "commit", "pack_index") and ident != digest:
        raise UserError(
            f"the bytes sent for {key} hash to {digest[:16]}, not to the key",
            hint="Upload the right bytes; a key names its content.",
        )


# -- endpoints -------------------------------------------------------------------------------


@router.get("", response_model=LakeInfo)
def lake_info(request: Request, principal: User, plane: Plane) -> LakeInfo:
    """How this server moves bytes: presigned URLs to the lake, or streamed through itself."""
    access = _access(request)
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
    _allowed(plane, principal, body.datasets, "writer")
    return KnownOut(known=sorted(plane.hub.catalog.known_blobs(set(body.digests))))


@router.post("/locate", response_model=LocateOut)
def locate(body: DigestsIn, principal: User, plane: Plane) -> LocateOut:
    """Where each known blob is: a pack and an offset, or an object of its own (readers)."""
    _allowed(plane, principal, body.datasets, "reader")
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
    _allowed(plane, principal, body.datasets, "writer")
    for key in body.keys:
        _kind(key)
    return KeysOut(keys=sorted(plane.hub.lake.exists(body.keys)))


@router.post("/presign", response_model=PresignOut)
def presign(body: PresignIn, request: Request, principal: User, plane: Plane) -> PresignOut:
    """Short-lived URLs for one operation's objects.

    GET: readers, for keys the named datasets reference (any byte range of
    them). PUT: writers, for new content-addressed keys, with the exact size
    to send; a key that exists comes back ``exists`` without a URL. On a lake
    the server streams, the URLs are the server's /lake/objects (send the token).
    """
    access = _access(request)
    gets = [i.key for i in body.items if i.method == "GET"]
    puts = [i for i in body.items if i.method == "PUT"]
    if gets:
        readable = _allowed(plane, principal, body.datasets, "reader")
        _check_readable(access, readable, gets)
    existing: set[str] = set()
    if puts:
        _allowed(plane, principal, body.datasets, "writer")
        for item in puts:
            _kind(item.key)
            if item.size is None:
                raise UserError(f"PUT {item.key} needs its size", hint="Send 'size' in bytes.")
        existing = plane.hub.lake.exists(i.key for i in puts)
    expires = _expires()
    query = "?" + urlencode([("dataset", d) for d in body.datasets])
    out = []
    for item in body.items:
        if item.method == "PUT" and item.key in existing:
            out.append(Presigned(method="PUT", key=item.key, status="exists"))
            continue
        if access.presigner is None:
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
    _allowed(plane, principal, body.datasets, "writer")
    kind, _ = _kind(body.key)
    if kind != "blob":
        raise UserError(f"only blobs are uploaded in parts, not {body.key}")
    presigner = _presigner(request)
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
        status="ok", upload_id=upload_id, part_size=part_size, parts=parts, expires_at=_expires()
    )


@router.post("/multipart/parts", response_model=PartsOut)
def multipart_parts(body: PartsIn, request: Request, principal: User, plane: Plane) -> PartsOut:
    """Sign some parts of a started upload again, for an upload that outlived its URLs."""
    _allowed(plane, principal, body.datasets, "writer")
    if _kind(body.key)[0] != "blob":
        raise UserError(f"{body.key} is not a blob")
    presigner = _presigner(request)
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
    return PartsOut(parts=parts, expires_at=_expires())


@router.post("/multipart/complete", response_model=StoredOut)
def multipart_complete(
    body: MultipartDoneIn, request: Request, principal: User, plane: Plane
) -> StoredOut:
    """Join the uploaded parts into the object (writers)."""
    _allowed(plane, principal, body.datasets, "writer")
    if _kind(body.key)[0] != "blob" or not body.parts:
        raise UserError(f"nothing to complete for {body.key}")
    presigner = _presigner(request)
    presigner.complete_multipart(body.key, body.upload_id, body.parts)
    size = _size_of(plane.hub.lake, body.key)
    return StoredOut(key=body.key, status="stored", size=size or 0)


@router.post("/multipart/abort", status_code=204, response_class=Response)
def multipart_abort(
    body: MultipartDoneIn, request: Request, principal: User, plane: Plane
) -> Response:
    """Give up a multipart upload; its parts are deleted (writers)."""
    _allowed(plane, principal, body.datasets, "writer")
    if _kind(body.key)[0] != "blob":
        raise UserError(f"{body.key} is not a blob")
    presigner = _access(request).presigner
    if presigner is not None:
        presigner.abort_multipart(body.key, body.upload_id)
    return Response(status_code=204)


@router.post("/packs", response_model=Recorded)
def record_pack(body: PackIn, request: Request, principal: User, plane: Plane) -> Recorded:
    """Record an uploaded pack and its blobs, once the lake shows it is what it claims (writers).

    The pack object must exist with ``size`` bytes, and its index object must
    hash to ``pack_id`` and lay ``blob_count`` blobs end to end over exactly
    those bytes. On a lake the server streams, each blob's bytes are hashed too.
    """
    _allowed(plane, principal, body.datasets, "writer")
    lake = plane.hub.lake
    key = pack_key(body.pack_id)
    size = _size_of(lake, key)
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
    if _access(request).presigner is None and size:
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
    _allowed(plane, principal, body.datasets, "writer")
    key = blob_key(body.digest)
    size = _size_of(plane.hub.lake, key)
    if size is None:
        raise UserError(f"{key} is not in the lake", hint="Upload the blob before recording it.")
    if size != body.size:
        raise UserError(f"{key} holds {size} bytes, not {body.size} as declared")
    plane.hub.catalog.record_blob(BlobLocation(body.digest, size))
    return Recorded(key=key, blobs=1)


@router.post("/commits", response_model=CommitFull, status_code=201)
def add_commit(body: CommitIn, request: Request, principal: User, plane: Plane) -> CommitFull:
    """Add a commit whose objects are in the lake, moving the branch if it is still at
    ``expected_head`` (writers of the commit's dataset). 409 if someone committed first."""
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
    _allowed(plane, principal, [commit.dataset], "writer")
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
    access = _access(request)
    access.learn(commit_id, entries)
    plane.hub.catalog.add_commit(commit, expected_head=body.expected_head, branch=body.branch)
    return _full(commit_id, commit)


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
    _allowed(plane, principal, [dataset], "reader")
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
    _allowed(plane, principal, [dataset], "reader")
    return [_full(c.id, c) for c in plane.hub.catalog.log(dataset, ref, limit)]


# -- streaming, for a lake the server cannot sign URLs for ---------------------------------------

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@router.get(
    "/objects/{key:path}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The object's bytes"},
        206: {"content": {"application/octet-stream": {}}, "description": "The bytes asked for"},
    },
)
def get_object(
    key: str,
    request: Request,
    principal: User,
    plane: Plane,
    dataset: Annotated[list[str], Query(min_length=1, max_length=MAX_DATASETS)],
) -> Response:
    """An object's bytes (or one ``Range: bytes=a-b``), streamed from the lake (readers)."""
    check_key(key)
    readable = _allowed(plane, principal, dataset, "reader")
    _check_readable(_access(request), readable, [key])
    start, length = 0, None
    header = request.headers.get("range")
    if header:
        m = _RANGE.fullmatch(header.strip())
        if not m:
            raise UserError(f"unsupported Range {header!r}", hint="Send one range: bytes=a-b.")
        start = int(m.group(1))
        if m.group(2):
            length = int(m.group(2)) - start + 1
            if length < 0:
                raise UserError(f"empty Range {header!r}")
    lake = plane.hub.lake
    chunks = lake.iter_chunks(key, start, length, chunk_size=1 << 20)
    first = next(chunks, b"")  # a missing object is a JSON error, not a cut response
    headers = {"Cache-Control": "no-store"}
    status = 200
    if length is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{start + length - 1}/*"
        headers["Content-Length"] = str(length)
    return StreamingResponse(
        _chain(first, chunks),
        status_code=status,
        media_type="application/octet-stream",
        headers=headers,
    )


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


@router.put("/objects/{key:path}", response_model=StoredOut)
async def put_object(
    key: str,
    request: Request,
    principal: User,
    plane: Plane,
    dataset: Annotated[list[str], Query(min_length=1, max_length=MAX_DATASETS)],
) -> StoredOut:
    """Store the request body as a new object, streamed to disk (writers; a lake the server
    streams only). Content-addressed keys are hashed on the way in; an existing key is
    left as it is and answered ``exists``."""
    await run_in_threadpool(_allowed, plane, principal, dataset, "writer")
    kind, _ = _kind(key)
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise UserError("send the object's size in Content-Length", hint="No chunked uploads.")
    size = int(declared)
    lake = plane.hub.lake
    root = getattr(lake, "root", None)
    if _access(request).presigner is not None or not isinstance(root, Path):
        raise UserError(
            "this server's lake takes uploads through presigned URLs",
            hint="POST /api/v1/lake/presign for a URL, then PUT to it.",
        )
    final = local_path(root, key)
    if await run_in_threadpool(final.is_file):
        async for _ in request.stream():  # drain, so the client reads the answer cleanly
            pass
        return StoredOut(key=key, status="exists", size=final.stat().st_size)
    digest, upload = await _stream_to(final, request.stream(), size)
    try:
        # A pack's bytes are checked against its index when it is recorded.
        _verify_key_bytes(key, digest)
    except BaseException:
        await run_in_threadpool(upload.discard)
        raise
    await run_in_threadpool(_publish, final, upload)
    return StoredOut(key=key, status="stored", size=size)


class _Upload:
    """A temporary file beside the final object, hashed while written."""

    def __init__(self, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=final.parent)
        self.path = Path(name)
        self.file = os.fdopen(fd, "wb")
        self.hash = blake3.blake3()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def _stream_to(final: Path, body: AsyncIterator[bytes], size: int) -> tuple[str, _Upload]:
    upload = await run_in_threadpool(_Upload, final)
    try:
        buf = bytearray()
        async for chunk in body:
            buf += chunk
            if upload.size + len(buf) > size:
                raise UserError(f"the body is longer than its Content-Length ({size})")
            if len(buf) >= STREAM_WRITE:
                await run_in_threadpool(upload.write, bytes(buf))
                buf.clear()
        if buf:
            await run_in_threadpool(upload.write, bytes(buf))
        if upload.size != size:
            raise UserError(f"the body ended after {upload.size} of {size} bytes")
        await run_in_threadpool(upload.file.close)
    except BaseException:
        await run_in_threadpool(upload.discard)
        raise
    return upload.hash.hexdigest(), upload


def _publish(final: Path, upload: _Upload) -> None:
    """Rename the finished upload into place: readers see all of it or nothing."""
    try:
        os.replace(upload.path, final)
    except BaseException:
        upload.discard()
        raise
