"""Catalog records as API models, and the few reads the API shapes for itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from lakecache.cache.service import ACTIVE
from lakecache.cache.volume import volume_free_bytes
from lakecache.server.models import CacheOut, TokenOut, UserOut

if TYPE_CHECKING:
    from lakecache.catalog.accounts import TokenRecord, UserRecord
    from lakecache.catalog.topology import CacheRecord, Topology, VolumeRecord


#: How long a volume's free space reported by its site's agent is shown (agents report
#: every minute; an agent stopped for longer leaves the figure unknown, not stale).
SPACE_FRESH = timedelta(minutes=10)


@dataclass(frozen=True)
class Usage:
    """A volume's figures as the server sees them; it may not have the volume mounted."""

    volume: VolumeRecord
    committed: int
    #: None when the volume is not mounted on the server's machine (another site) and
    #: no agent there reported it in the last :data:`SPACE_FRESH`.
    free_fs: int | None
    caches: int
    linked_saved: int

    @property
    def available(self) -> int:
        left = max(0, self.volume.capacity - self.committed)
        return left if self.free_fs is None else min(left, self.free_fs)


def volume_usage(
    topology: Topology, volume: VolumeRecord, caches: list[CacheRecord] | None = None
) -> Usage:
    """Committed and free bytes of ``volume``, without creating or touching its folder.

    ``caches``: the caches already read (any volumes), to save a query per volume.
    """
    if caches is None:
        caches = topology.list_caches(volume=volume.name, states=ACTIVE)
    mine = [c for c in caches if c.volume == volume.name and c.state in ACTIVE]
    return Usage(
        volume,
        committed=sum(c.occupied for c in mine),
        free_fs=filesystem_free(volume),
        caches=len(mine),
        linked_saved=sum(c.linked_bytes for c in mine),
    )


def filesystem_free(volume: VolumeRecord) -> int | None:
    """Free bytes of ``volume``'s filesystem: measured where mounted here, else as its
    site's agent last reported within :data:`SPACE_FRESH`, else None."""
    free = volume_free_bytes(volume.root)
    reported = volume.fs_reported_at
    if free is None and reported is not None and datetime.now(UTC) - reported <= SPACE_FRESH:
        free = volume.fs_free  # not mounted here: what the site's agent saw, recently
    return free


def user_out(u: UserRecord) -> UserOut:
    return UserOut(
        name=u.name,
        org_admin=u.org_admin,
        disabled=u.disabled,
        created_at=u.created_at,
        agent_site=u.agent_site,
    )


def token_out(t: TokenRecord, now: datetime) -> TokenOut:
    return TokenOut(
        id=t.id,
        name=t.name,
        user=t.user,
        prefix=t.prefix,
        created_at=t.created_at,
        expires_at=t.expires_at,
        revoked_at=t.revoked_at,
        last_used_at=t.last_used_at,
        active=t.active(now),
    )


def cache_out(
    c: CacheRecord, ttl_seconds: int, now: datetime, *, agent_note: str | None = None
) -> CacheOut:
    expires = None
    if c.state == "ready" and not c.pinned and not c.leases:
        expires = max(0.0, c.last_used_at.timestamp() + ttl_seconds - now.timestamp())
    if c.state == "ready":
        progress = 1.0
    elif c.state == "filling" and c.bytes:
        progress = min(1.0, c.done_bytes / c.bytes)
    else:
        progress = 0.0
    return CacheOut(
        id=c.id,
        dataset=c.dataset,
        commit=c.commit_id,
        subpath=c.subpath,
        site=c.site,
        volume=c.volume,
        state=c.state,  # type: ignore[arg-type]
        files=c.files,
        bytes=c.bytes,
        done_bytes=c.done_bytes,
        progress=progress,
        linked_bytes=c.linked_bytes,
        fetched_bytes=c.fetched_bytes,
        pinned=c.pinned,
        leases=c.leases,
        created_at=c.created_at,
        updated_at=c.updated_at,
        ready_at=c.ready_at,
        last_used_at=c.last_used_at,
        expires_in_seconds=expires,
        error=c.error,
        request=c.request,
        worker=c.worker,
        heartbeat_at=c.heartbeat_at,
        report=c.report,
        agent_note=agent_note,
        fence_token=c.fence_token,
    )
