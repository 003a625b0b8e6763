"""Eviction is decided by a pure function over a snapshot, then executed.

:func:`plan_eviction` sees caches, their leases and pins, and the clock, and
returns a frozen :class:`EvictionPlan`: which caches go, why, and how many
bytes that frees; and, when a fill needs room that cannot be made, what holds
the space. Tests check plans directly; ``cache gc --dry-run`` prints one.

Rules:
- a cache unused for longer than its volume's TTL goes (``reason="ttl"``);
- when ``need_bytes`` must fit, more ready caches go, least recently used
  first (``reason="room"``);
- a pinned cache, a cache with a live lease, or one not ``ready`` never goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from lakecache.units import format_size


@dataclass(frozen=True)
class CacheView:
    """What the planner needs to know about one cache."""

    id: int
    name: str  # dataset@commit, for messages
    state: str
    size: int  # bytes it occupies on the volume (linked bytes excluded)
    last_used: datetime
    pinned: bool
    leases: int  # live leases (heartbeat not expired)


@dataclass(frozen=True)
class Eviction:
    cache_id: int
    name: str
    size: int
    reason: str  # "ttl" | "room"


@dataclass(frozen=True)
class EvictionPlan:
    evictions: tuple[Eviction, ...]
    bytes_freed: int
    need_bytes: int = 0
    available_after: int = 0
    #: When room cannot be made: the caches that hold the space, and why each stays.
    blocked_by: tuple[str, ...] = ()

    @property
    def fits(self) -> bool:
        return self.available_after >= self.need_bytes

    def explain(self) -> str:
        """A sentence for the user about what holds the space."""
        held = "; ".join(self.blocked_by) or "nothing evictable"
        return (
            f"needs {format_size(self.need_bytes)} but only {format_size(self.available_after)} "
            f"can be made free; the space is held by: {held}"
        )


def plan_eviction(
    caches: list[CacheView],
    *,
    now: datetime,
    ttl: timedelta,
    available: int = 0,
    need_bytes: int = 0,
) -> EvictionPlan:
    """Choose the caches to evict: expired ones, then LRU ones until ``need_bytes`` fit.

    ``available`` is the room there is now (quota or filesystem, whichever is
    smaller, minus what is committed). Pure: no I/O, no clock.
    """
    keep_reasons: dict[int, str] = {}
    out: list[Eviction] = []
    for c in caches:
        if c.state != "ready":
            keep_reasons[c.id] = f"{c.name} ({c.state})"
        elif c.pinned:
            keep_reasons[c.id] = f"{c.name} (pinned)"
        elif c.leases:
            keep_reasons[c.id] = f"{c.name} (in use by {c.leases} lease(s))"
    for c in caches:
        if c.id not in keep_reasons and now - c.last_used > ttl:
            out.append(Eviction(c.id, c.name, c.size, "ttl"))
    freed = sum(e.size for e in out)
    chosen = {e.cache_id for e in out}
    if need_bytes > available + freed:
        candidates = sorted(
            (c for c in caches if c.id not in keep_reasons and c.id not in chosen),
            key=lambda c: (c.last_used, c.id),
        )
        for c in candidates:
            if need_bytes <= available + freed:
                break
            out.append(Eviction(c.id, c.name, c.size, "room"))
            freed += c.size
    after = available + freed
    blocked: tuple[str, ...] = ()
    if need_bytes > after:
        holders = sorted((c for c in caches if c.id in keep_reasons), key=lambda c: -c.size)
        blocked = tuple(f"{keep_reasons[c.id]}: {format_size(c.size)}" for c in holders)
    return EvictionPlan(tuple(out), freed, need_bytes, after, blocked)
