"""What the lake endpoints take and give (the API edge: pydantic models)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from lakecache.catalog.names import MAIN
from lakecache.server.routes.lake.access import (
    MAX_BATCH,
    MAX_PARTS,
    MAX_PRESIGN,
    MAX_PUT,
    MIN_PART,
    DatasetList,
    Digest,
    LakeKey,
)


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
    #: ``exists``: a PUT of a key the lake already holds (skip it); no URL. ``prove``: the
    #: key exists, but its blobs are not yours yet: send the bytes to ``url`` (the
    #: server's, which hashes them and stores nothing) to show that you hold them.
    status: Literal["ok", "exists", "prove"]
    url: str | None = None
    #: The URL is the server's own (stream mode, or a proof): send the API token with it.
    bearer: bool = False
    expires_at: datetime | None = None
    #: Headers the URL is signed with: send them as they are (a PUT: ``If-None-Match: *``).
    headers: dict[str, str] = Field(default_factory=dict)


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
    #: ``prove``: as for a PUT (:class:`Presigned`): PUT the bytes to ``url``.
    status: Literal["ok", "exists", "prove"]
    url: str | None = None
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
