"""What the API takes and gives, as pydantic models: the edge where input is parsed.

Inside, the server works with the catalog's frozen records; these models only
describe the JSON. No model has a field for a lake credential or a stored hash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from lakecache.server.pagination import Page

Role = Literal["reader", "writer", "admin"]
CacheState = Literal["pending", "filling", "ready", "evicting", "evicted", "failed"]

_NAME = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
_PASSWORD = Field(min_length=8, max_length=1024)


# -- accounts ------------------------------------------------------------------------------


class UserOut(BaseModel):
    name: str
    org_admin: bool
    disabled: bool
    created_at: datetime
    #: The site whose agent runs as this user (it works only that site's caches).
    agent_site: str | None = None


class UserIn(BaseModel):
    name: str = _NAME
    #: Omit to have the server generate one (returned once).
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    org_admin: bool = False
    #: A user for this site's agent: it may fill, verify and evict that site's caches
    #: and read what they hold from the lake, nothing else.
    agent_site: str | None = Field(default=None, min_length=1, max_length=64)


class UserCreated(BaseModel):
    user: UserOut
    #: Only when the server generated it: shown this once.
    password: str | None = None


class UserPatch(BaseModel):
    org_admin: bool | None = None
    disabled: bool | None = None
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    #: Needed when users change their own password.
    current_password: str | None = Field(default=None, max_length=1024)


class LoginIn(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)


class SessionOut(BaseModel):
    user: UserOut
    via: Literal["token", "session"]
    #: Send this in X-CSRF-Token on unsafe requests (session logins only).
    csrf_token: str | None = None
    expires_at: datetime | None = None


class TokenIn(BaseModel):
    name: str = Field(default="api", min_length=1, max_length=128)
    #: Days until it expires; null: never.
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)


class TokenLoginIn(BaseModel):
    """Name and password in exchange for an API token: what `lakecache login` sends."""

    name: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)
    token_name: str = Field(default="cli", min_length=1, max_length=128)
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)


class TokenOut(BaseModel):
    id: int
    name: str
    user: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    active: bool


class TokenCreated(TokenOut):
    #: The secret: shown once, kept by the server only as a hash.
    token: str


# -- datasets ------------------------------------------------------------------------------


class CachePlace(BaseModel):
    cache_id: int
    site: str
    volume: str
    commit: str
    subpath: str
    state: CacheState


class DatasetIn(BaseModel):
    name: str = _NAME
    description: str = Field(default="", max_length=10_000)


class DatasetOut(BaseModel):
    name: str
    description: str
    owner: str
    created_at: datetime
    #: The caller's role (org admins: admin).
    role: Role
    commit_count: int
    head: str | None
    file_count: int
    bytes: int
    #: Where the dataset has caches that are not evicted.
    cached: list[CachePlace]


class MemberIn(BaseModel):
    role: Role


class MemberOut(BaseModel):
    user: str
    role: Role
    created_at: datetime


class TagIn(BaseModel):
    ref: str = Field(default="latest", min_length=1, max_length=128)
    force: bool = False


class TagOut(BaseModel):
    name: str
    commit: str


class CommitOut(BaseModel):
    id: str
    parents: list[str]
    author: str
    message: str
    created_at: str
    file_count: int
    bytes: int
    tags: list[str]


class TreeItem(BaseModel):
    name: str
    path: str
    type: Literal["folder", "file"]
    size: int
    #: Files under a folder (1 for a file).
    files: int
    digest: str | None = None
    content_type: str | None = None


class TreePage(Page[TreeItem]):
    commit: str
    path: str
    #: Totals of the folder listed (recursive).
    folder_files: int
    folder_bytes: int


class ChangeOut(BaseModel):
    path: str
    status: Literal["added", "removed", "modified"]
    old_size: int | None
    new_size: int | None
    old_digest: str | None = None
    new_digest: str | None = None


class DiffPage(Page[ChangeOut]):
    from_commit: str
    to_commit: str
    added: int
    removed: int
    modified: int
    bytes_added: int
    bytes_removed: int


# -- caches and topology -------------------------------------------------------------------


class CacheOut(BaseModel):
    id: int
    dataset: str
    commit: str
    subpath: str
    site: str
    volume: str
    state: CacheState
    files: int
    bytes: int
    done_bytes: int
    #: done_bytes / bytes while filling, 1 when ready.
    progress: float
    linked_bytes: int
    fetched_bytes: int
    pinned: bool
    leases: int
    created_at: datetime
    updated_at: datetime
    ready_at: datetime | None
    last_used_at: datetime
    #: Seconds until the TTL evicts it (ready, unpinned, unleased caches only).
    expires_in_seconds: float | None
    error: str | None
    #: Work asked of the site's agent: verify, repair or evict.
    request: str | None
    #: Who fills it (``user/host:pid:thread``), and when it last said it was alive.
    worker: str | None = None
    heartbeat_at: datetime | None = None
    #: The outcome of the last verify.
    report: str | None = None
    #: The current claim's fence token (raised by every fill or eviction claim).
    fence_token: int = 0
    #: Set on a pending cache at a site where no agent has been seen lately: it will not
    #: fill until one runs there (says how to start one).
    agent_note: str | None = None


class CacheIn(BaseModel):
    ref: str = Field(default="latest", min_length=1, max_length=128)
    site: str | None = Field(default=None, max_length=64)
    volume: str | None = Field(default=None, max_length=64)
    #: A folder or file of the commit; empty: the whole commit.
    path: str = Field(default="", max_length=4096)


class CachePatch(BaseModel):
    pinned: bool


# -- what fillers, evictors and users of a cache report --------------------------------------

_WORKER = Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")


class ClaimIn(BaseModel):
    #: Who fills it, e.g. ``host:pid:thread``; the server prefixes the user's name.
    worker: str = _WORKER
    #: A fill whose heartbeat is older than this may be taken over. At least 15 s
    #: (three missed heartbeats), so that nobody takes over a fill that is alive.
    stale_after_seconds: float = Field(default=60.0, ge=15, le=86400)


#: The fence token the claim returned (``TransitionOut.token``); a stale one gets 409
#: ``taken_over``: a newer worker has the cache, stop.
_TOKEN = Field(ge=0, le=2**62)


class BeatIn(BaseModel):
    token: int = _TOKEN
    done_bytes: int = Field(ge=0, le=2**62)


class FillDoneIn(BaseModel):
    token: int = _TOKEN
    linked_bytes: int = Field(ge=0, le=2**62)
    fetched_bytes: int = Field(ge=0, le=2**62)


class FillFailedIn(BaseModel):
    token: int = _TOKEN
    reason: str = Field(min_length=1, max_length=2000)


class EvictedIn(BaseModel):
    token: int = _TOKEN


class ReportIn(BaseModel):
    report: str = Field(max_length=2000)


class RequestIn(BaseModel):
    request: Literal["evict", "verify", "repair"]


class TransitionOut(BaseModel):
    #: False when the cache was not in the state the step needs (someone else has it).
    done: bool
    cache: CacheOut
    #: The fence token of the claim this step made (claim, eviction): every later
    #: step of that claim presents it.
    token: int | None = None


class LeaseIn(BaseModel):
    #: Who holds it, e.g. ``host:pid``; the server prefixes the user's name.
    holder: str = _WORKER
    ttl_seconds: float = Field(default=60.0, ge=1, le=3600)


class LeaseRenewIn(BaseModel):
    ttl_seconds: float = Field(default=60.0, ge=1, le=3600)


class LeaseOut(BaseModel):
    id: int
    cache_id: int
    holder: str
    expires_at: datetime


class SiteIn(BaseModel):
    name: str = _NAME
    description: str = Field(default="", max_length=1000)


class SiteOut(BaseModel):
    name: str
    description: str
    volumes: list[str]
    compute: list[str]


class VolumeIn(BaseModel):
    name: str = _NAME
    site: str = Field(min_length=1, max_length=64)
    root: str = Field(min_length=1, max_length=4096)
    capacity: int = Field(gt=0)
    ttl_seconds: int = Field(default=86400, gt=0, le=10 * 365 * 86400)


class VolumePatch(BaseModel):
    """What to change of a volume; a field left out stays as it is."""

    capacity: int | None = Field(default=None, gt=0)
    ttl_seconds: int | None = Field(default=None, gt=0, le=10 * 365 * 86400)


class VolumeOut(BaseModel):
    name: str
    site: str
    root: str
    capacity: int
    ttl_seconds: int
    #: Bytes held by caches (pending and filling count in full).
    committed: int
    #: Free bytes of the filesystem, as the server sees it or, where it does not mount
    #: the volume, as the site's agent last reported it; null when neither is known.
    free_fs: int | None
    #: What a new cache can still take: quota left, bounded by the filesystem.
    available: int
    caches: int
    #: Bytes saved by hard links between caches.
    linked_saved: int
    #: When an agent at the site last reported the filesystem's space.
    space_reported_at: datetime | None = None


class VolumeSpaceIn(BaseModel):
    """A volume's filesystem as a machine that mounts it sees it (statvfs)."""

    free_bytes: int = Field(ge=0, le=2**62)
    total_bytes: int = Field(ge=0, le=2**62)


class ComputeIn(BaseModel):
    name: str = _NAME
    site: str = Field(min_length=1, max_length=64)
    backend: Literal["local", "ray", "kubernetes"] = "local"
    volumes: list[str] = Field(default_factory=list, max_length=100)


class ComputeOut(BaseModel):
    name: str
    site: str
    backend: str
    volumes: list[str]


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    catalog: Literal["ok", "unavailable"]
    version: str


class ServerInfo(BaseModel):
    version: str
    #: Where the lake is (scheme, bucket, prefix, endpoint); never credentials.
    lake: str
    #: The catalog's URL with any password masked.
    catalog: str
    agents: list[str]
