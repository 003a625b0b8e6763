"""Caches counted per volume and state in the database, for figures that cover them all.

A Prometheus scrape wants, per volume, how many caches are in each state and
their bytes. Reading every cache row for that costs a scrape time and memory
in the number of caches (10,000 and more on a team's server, every 15 s); one
``GROUP BY`` returns at most six rows per volume whatever the number of caches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import case, func, select

from lakecache.catalog import topology_tables as tt

if TYPE_CHECKING:
    from lakecache.catalog.db import Catalog


@dataclass(frozen=True)
class CacheTotals:
    """The caches of one volume in one state, summed."""

    site: str
    volume: str
    state: str
    caches: int
    #: Their sizes (a commit's or sub-path's bytes).
    bytes: int
    #: What they take on the volume: bytes less those hard-linked from other caches.
    occupied: int
    #: Bytes shared with other caches by hard links (saved on the volume).
    linked: int
    #: Bytes written so far (of fills in progress, for ``filling``).
    done: int


def cache_totals(catalog: Catalog) -> list[CacheTotals]:
    """Per (site, volume, state) with at least one cache: counts and byte sums, one query."""
    c = tt.caches.c
    # As CacheRecord.occupied: a cache's linked bytes never count below zero.
    occupied = case((c.bytes > c.linked_bytes, c.bytes - c.linked_bytes), else_=0)
    q = (
        select(
            tt.sites.c.name,
            tt.volumes.c.name,
            c.state,
            func.count(),
            func.coalesce(func.sum(c.bytes), 0),
            func.coalesce(func.sum(occupied), 0),
            func.coalesce(func.sum(c.linked_bytes), 0),
            func.coalesce(func.sum(c.done_bytes), 0),
        )
        .select_from(tt.caches)
        .join(tt.volumes, tt.volumes.c.id == c.volume_id)
        .join(tt.sites, tt.sites.c.id == tt.volumes.c.site_id)
        .group_by(tt.sites.c.name, tt.volumes.c.name, c.state)
    )
    with catalog._read() as conn:
        rows = conn.execute(q).all()
    return [
        CacheTotals(site, volume, state, int(n), int(size), int(taken), int(linked), int(done))
        for site, volume, state, n, size, taken, linked, done in rows
    ]
